extension String {
    /// The string as one word for /bin/sh, whatever it holds (a checkout path with spaces or quotes).
    public var shellQuoted: String { "'" + replacingOccurrences(of: "'", with: "'\\''") + "'" }
}
