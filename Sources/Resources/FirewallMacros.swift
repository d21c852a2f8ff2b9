/// The firewall macros a rule can name (`IN SSH(ACCEPT)`): well-known services
/// as protocol, ports and ICMP types, the set Proxmox VE ships. A macro
/// expands to one rule per entry; the rule's own options (source, dest, log)
/// apply to each.
public enum FirewallMacros {
    public struct Entry: Hashable, Sendable {
        /// tcp, udp, icmp, icmpv6, or an IP protocol number.
        public var proto: String
        public var dport: String?
        public var sport: String?
        public var icmpType: String?

        public init(_ proto: String, dport: String? = nil, sport: String? = nil, icmpType: String? = nil) {
            self.proto = proto
            self.dport = dport
            self.sport = sport
            self.icmpType = icmpType
        }
    }

    public struct Macro: Hashable, Sendable {
        public var summary: String
        public var entries: [Entry]
    }

    static func tcp(_ port: String) -> Entry { Entry("tcp", dport: port) }
    static func udp(_ port: String) -> Entry { Entry("udp", dport: port) }
    static let echoRequest = [Entry("icmp", icmpType: "echo-request"), Entry("icmpv6", icmpType: "echo-request")]

    /// By name, as rules spell it (case matters, as upstream's lookup is exact).
    public static let all: [String: Macro] = [
        "Amanda": Macro(summary: "Amanda backup", entries: [udp("10080"), tcp("10080")]),
        "Auth": Macro(summary: "ident (RFC 1413)", entries: [tcp("113")]),
        "BGP": Macro(summary: "BGP routing", entries: [tcp("179")]),
        "BitTorrent": Macro(summary: "BitTorrent up to 3.1", entries: [tcp("6881:6889"), udp("6881")]),
        "BitTorrent32": Macro(summary: "BitTorrent 3.2 and later", entries: [tcp("6881:6999"), udp("6881")]),
        "CVS": Macro(summary: "CVS pserver", entries: [tcp("2401")]),
        "Ceph": Macro(summary: "Ceph monitors (v1 and v2), OSDs and MDS", entries: [tcp("6789"), tcp("3300"), tcp("6800:7300")]),
        "Citrix": Macro(summary: "Citrix ICA and session reliability", entries: [tcp("1494"), udp("1604"), tcp("2598")]),
        "DAAP": Macro(summary: "Digital Audio Access Protocol", entries: [tcp("3689"), udp("3689")]),
        "DCC": Macro(summary: "Distributed Checksum Clearinghouse", entries: [tcp("6277")]),
        "DHCPfwd": Macro(summary: "forwarded DHCP", entries: [Entry("udp", dport: "67:68", sport: "67:68")]),
        "DHCPv6": Macro(summary: "DHCPv6", entries: [Entry("udp", dport: "546:547", sport: "546:547")]),
        "DNS": Macro(summary: "DNS", entries: [udp("53"), tcp("53")]),
        "Distcc": Macro(summary: "distributed compiler", entries: [tcp("3632")]),
        "FTP": Macro(summary: "FTP control", entries: [tcp("21")]),
        "Finger": Macro(summary: "finger", entries: [tcp("79")]),
        "GNUnet": Macro(summary: "GNUnet", entries: [tcp("2086"), udp("2086"), tcp("1080"), udp("1080")]),
        "GRE": Macro(summary: "GRE tunnels", entries: [Entry("47")]),
        "Git": Macro(summary: "git daemon", entries: [tcp("9418")]),
        "HKP": Macro(summary: "OpenPGP key server", entries: [tcp("11371")]),
        "HTTP": Macro(summary: "HTTP", entries: [tcp("80")]),
        "HTTP/3": Macro(summary: "HTTP/3 over QUIC", entries: [udp("443")]),
        "HTTPS": Macro(summary: "HTTPS", entries: [tcp("443")]),
        "ICPV2": Macro(summary: "Internet Cache Protocol v2", entries: [udp("3130")]),
        "ICQ": Macro(summary: "ICQ", entries: [tcp("5190")]),
        "IMAP": Macro(summary: "IMAP", entries: [tcp("143")]),
        "IMAPS": Macro(summary: "IMAP over TLS", entries: [tcp("993")]),
        "IPIP": Macro(summary: "IP-in-IP tunnels", entries: [Entry("94")]),
        "IPsec": Macro(summary: "IPsec with ESP", entries: [Entry("udp", dport: "500", sport: "500"), Entry("50")]),
        "IPsecah": Macro(summary: "IPsec with AH", entries: [Entry("udp", dport: "500", sport: "500"), Entry("51")]),
        "IPsecnat": Macro(summary: "IPsec through NAT", entries: [udp("500"), udp("4500"), Entry("50")]),
        "IRC": Macro(summary: "IRC", entries: [tcp("6667")]),
        "Jetdirect": Macro(summary: "HP Jetdirect printing", entries: [tcp("9100")]),
        "L2TP": Macro(summary: "L2TP", entries: [udp("1701")]),
        "LDAP": Macro(summary: "LDAP", entries: [tcp("389")]),
        "LDAPS": Macro(summary: "LDAP over TLS", entries: [tcp("636")]),
        "MDNS": Macro(summary: "multicast DNS", entries: [udp("5353")]),
        "MSNP": Macro(summary: "MSN messenger", entries: [tcp("1863")]),
        "MSSQL": Macro(summary: "Microsoft SQL Server", entries: [tcp("1433")]),
        "Mail": Macro(summary: "SMTP, SMTPS and submission", entries: [tcp("25"), tcp("465"), tcp("587")]),
        "Munin": Macro(summary: "Munin node", entries: [tcp("4949")]),
        "MySQL": Macro(summary: "MySQL and MariaDB", entries: [tcp("3306")]),
        "NNTP": Macro(summary: "NNTP", entries: [tcp("119")]),
        "NNTPS": Macro(summary: "NNTP over TLS", entries: [tcp("563")]),
        "NTP": Macro(summary: "NTP", entries: [udp("123")]),
        "NeighborDiscovery": Macro(summary: "IPv6 router and neighbour solicitation and advertisement", entries: [
            Entry("icmpv6", icmpType: "nd-router-solicit"), Entry("icmpv6", icmpType: "nd-router-advert"),
            Entry("icmpv6", icmpType: "nd-neighbor-solicit"), Entry("icmpv6", icmpType: "nd-neighbor-advert"),
        ]),
        "OSPF": Macro(summary: "OSPF routing", entries: [Entry("89")]),
        "OpenVPN": Macro(summary: "OpenVPN", entries: [udp("1194")]),
        "PBS": Macro(summary: "Proxmox Backup Server", entries: [tcp("8007")]),
        "PCA": Macro(summary: "pcAnywhere", entries: [udp("5632"), tcp("5631")]),
        "PMG": Macro(summary: "Proxmox Mail Gateway web interface", entries: [tcp("8006")]),
        "POP3": Macro(summary: "POP3", entries: [tcp("110")]),
        "POP3S": Macro(summary: "POP3 over TLS", entries: [tcp("995")]),
        "PPtP": Macro(summary: "PPTP with GRE", entries: [Entry("47"), tcp("1723")]),
        "Ping": Macro(summary: "ICMP and ICMPv6 echo request", entries: echoRequest),
        "PostgreSQL": Macro(summary: "PostgreSQL", entries: [tcp("5432")]),
        "Printer": Macro(summary: "line printer daemon", entries: [tcp("515")]),
        "RDP": Macro(summary: "Remote Desktop", entries: [tcp("3389")]),
        "RIP": Macro(summary: "RIP routing", entries: [udp("520")]),
        "RNDC": Macro(summary: "BIND remote control", entries: [tcp("953")]),
        "Razor": Macro(summary: "Vipul's Razor", entries: [tcp("2703")]),
        "Rdate": Macro(summary: "rdate time (RFC 868)", entries: [tcp("37")]),
        "Rsync": Macro(summary: "rsync daemon", entries: [tcp("873")]),
        "SANE": Macro(summary: "SANE network scanning", entries: [tcp("6566")]),
        "SMB": Macro(summary: "Windows file sharing (SMB/CIFS, NetBIOS)", entries: [
            udp("135,445"), udp("137:139"), Entry("udp", dport: "1024:65535", sport: "137"), tcp("135,139,445"),
        ]),
        "SMBswat": Macro(summary: "Samba web administration", entries: [tcp("901")]),
        "SMTP": Macro(summary: "SMTP", entries: [tcp("25")]),
        "SMTPS": Macro(summary: "SMTP over TLS", entries: [tcp("465")]),
        "SNMP": Macro(summary: "SNMP and traps", entries: [udp("161:162"), tcp("161")]),
        "SPAMD": Macro(summary: "SpamAssassin daemon", entries: [tcp("783")]),
        "SPICEproxy": Macro(summary: "Proxmox VE SPICE proxy", entries: [tcp("3128")]),
        "SSH": Macro(summary: "SSH", entries: [tcp("22")]),
        "SVN": Macro(summary: "Subversion server", entries: [tcp("3690")]),
        "SixXS": Macro(summary: "SixXS IPv6 tunnel broker", entries: [tcp("3874"), udp("3740"), Entry("41"), udp("5072,8374")]),
        "Squid": Macro(summary: "Squid web proxy", entries: [tcp("3128")]),
        "Submission": Macro(summary: "mail submission", entries: [tcp("587")]),
        "Syslog": Macro(summary: "syslog", entries: [udp("514"), tcp("514")]),
        "TFTP": Macro(summary: "TFTP", entries: [udp("69")]),
        "Telnet": Macro(summary: "telnet", entries: [tcp("23")]),
        "Telnets": Macro(summary: "telnet over TLS", entries: [tcp("992")]),
        "Time": Macro(summary: "time (RFC 868)", entries: [tcp("37")]),
        "Trcrt": Macro(summary: "traceroute (30 hops) and echo request", entries: [udp("33434:33524")] + echoRequest),
        "VNC": Macro(summary: "VNC displays 0 to 99", entries: [tcp("5900:5999")]),
        "VNCL": Macro(summary: "VNC listen (reverse connections)", entries: [tcp("5500")]),
        "Web": Macro(summary: "HTTP and HTTPS", entries: [tcp("80"), tcp("443")]),
        "Webcache": Macro(summary: "web cache and proxy", entries: [tcp("8080")]),
        "Webmin": Macro(summary: "Webmin", entries: [tcp("10000")]),
        "Whois": Macro(summary: "whois", entries: [tcp("43")]),
    ]
}
