import Foundation
import Resources
import Testing

/// The service and protocol tables answer as the C library does from the same files (pve-firewall asks the C library).
@Suite("service and protocol names: the same answers as getservbyname and getprotobyname")
struct NetworkServicesTests {
    static let services = try? String(contentsOfFile: NetworkServices.servicesPath, encoding: .utf8)
    static let protocols = try? String(contentsOfFile: NetworkServices.protocolsPath, encoding: .utf8)

    @Test("every name and alias in this machine's /etc/services and /etc/protocols",
          .enabled(if: services != nil && protocols != nil, "needs /etc/services and /etc/protocols (Debian package netbase)"))
    func sameAsTheCLibrary() throws {
        let table = NetworkServices(services: Self.services, protocols: Self.protocols)
        let names = Set(table.services.flatMap(\.names))
        #expect(names.count > 100, "a netbase /etc/services names hundreds of services")
        var compared = 0
        for name in names.sorted() {
            for proto in ["tcp", "udp", "sctp", nil] as [String?] {
                let entry = proto.map { getservbyname(name, $0) } ?? getservbyname(name, nil)
                let expected = entry.map { Int(UInt16(bigEndian: UInt16(truncatingIfNeeded: $0.pointee.s_port))) }
                #expect(table.port(named: name, proto: proto) == expected, "\(name)/\(proto ?? "any")")
                compared += 1
            }
        }
        for name in table.protocols.keys.sorted() {
            let expected = getprotobyname(name).map { Int($0.pointee.p_proto) }
            #expect(table.protocolNumber(named: name) == expected, "protocol \(name)")
            compared += 1
        }
        #expect(table.port(named: "no-such-service", proto: nil) == nil && table.protocolNumber(named: "no-such-protocol") == nil)
        print("network services: \(compared) lookups answered as the C library does")
    }

    @Test("comments, blank lines, aliases and malformed lines")
    func parsing() {
        let table = NetworkServices(services: """
        # comment
        ssh\t\t22/tcp\t\t\t# SSH Remote Login Protocol

        http\t\t80/tcp\t\twww\t\t# WorldWideWeb HTTP
        broken 99999/tcp
        nocolon tcp
        domain\t\t53/udp
        domain\t\t53/tcp
        """, protocols: "ip\t0\tIP\t\t# internet protocol\ngre\t47\tGRE\nbad\t300\tBAD\n")
        #expect(table.port(named: "www", proto: "tcp") == 80)
        #expect(table.port(named: "ssh", proto: "udp") == nil && table.port(named: "ssh", proto: nil) == 22)
        #expect(table.port(named: "broken", proto: nil) == nil && table.port(named: "nocolon", proto: nil) == nil)
        #expect(table.port(named: "domain", proto: "tcp") == 53)
        #expect(table.protocolNumber(named: "GRE") == 47 && table.protocolNumber(named: "bad") == nil)
        #expect(NetworkServices(services: nil, protocols: nil).port(named: "ssh", proto: nil) == nil)
    }
}
