/// A parser for Structured Field Dictionaries (RFC 8941 §3.2, parsing algorithm §4.2.2), as far
/// as targeted cache-control fields need one (RFC 9213 §2).
///
/// It validates the whole grammar (keys, Items, Inner Lists, Parameters and every bare-item
/// type), because RFC 9213 §2.2 makes a field with any parse error count as absent, so a
/// lenient parser would apply directives the origin's field never validly carried. Values are
/// kept only as far as cache directives use them: Inner Lists and Parameters are checked and
/// then dropped (no cache directive defines them), Byte Sequences are not decoded.
struct StructuredFieldDictionary: Equatable {
    /// A bare item (RFC 8941 §3.3).
    enum Item: Equatable {
        case integer(Int64)
        case decimal(Double)
        case string(String)
        case token(String)
        case byteSequence(String)
        case boolean(Bool)
        /// An Inner List (§3.1.1); its members are validated but not kept.
        case innerList
    }

    /// Members in field order; a repeated key keeps its first position and its last value (§4.2.2).
    private(set) var members: [(key: String, value: Item)] = []

    static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.members.elementsEqual(rhs.members) { $0.key == $1.key && $0.value == $1.value }
    }

    /// The value of `key`, `nil` when absent.
    subscript(key: String) -> Item? {
        self.members.first { $0.key == key }?.value
    }

    /// Parses a field value (all field lines already combined with commas, §4.2); `nil` on any
    /// error, as §4.2 asks ("fail parsing" discards the whole field).
    init?(parsing value: String) {
        var parser = Parser(bytes: Array(value.utf8))
        guard let members = parser.parseDictionary() else { return nil }
        self.members = members
    }

    private struct Parser {
        let bytes: [UInt8]
        var index = 0

        private var current: UInt8? { self.index < self.bytes.count ? self.bytes[self.index] : nil }

        /// §4.2 with §4.2.2: leading/trailing SP, members separated by OWS "," OWS.
        mutating func parseDictionary() -> [(key: String, value: Item)]? {
            self.skip { $0 == UInt8(ascii: " ") }
            var members: [(key: String, value: Item)] = []
            while self.current != nil {
                guard let key = self.parseKey() else { return nil }
                let value: Item
                if self.current == UInt8(ascii: "=") {
                    self.index += 1
                    guard let item = self.parseItemOrInnerList() else { return nil }
                    value = item
                } else {
                    value = .boolean(true)
                    guard self.parseParameters() else { return nil }
                }
                if let existing = members.firstIndex(where: { $0.key == key }) {
                    members[existing].value = value
                } else {
                    members.append((key, value))
                }
                self.skip { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
                guard let next = self.current else { return members }
                guard next == UInt8(ascii: ",") else { return nil }
                self.index += 1
                self.skip { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
                // A trailing comma is an error (§4.2.2).
                guard self.current != nil else { return nil }
            }
            return members
        }

        private mutating func parseItemOrInnerList() -> Item? {
            if self.current == UInt8(ascii: "(") {
                return self.parseInnerList() ? .innerList : nil
            }
            guard let item = self.parseBareItem(), self.parseParameters() else { return nil }
            return item
        }

        /// §4.2.1.2: "(" *SP [ item *( 1*SP item ) *SP ] ")" parameters.
        private mutating func parseInnerList() -> Bool {
            self.index += 1
            while true {
                self.skip { $0 == UInt8(ascii: " ") }
                guard let byte = self.current else { return false }
                if byte == UInt8(ascii: ")") {
                    self.index += 1
                    return self.parseParameters()
                }
                guard self.parseBareItem() != nil, self.parseParameters() else { return false }
                guard let after = self.current, after == UInt8(ascii: " ") || after == UInt8(ascii: ")") else {
                    return false
                }
            }
        }

        /// §4.2.3.2: *( ";" *SP key [ "=" bare-item ] ).
        private mutating func parseParameters() -> Bool {
            while self.current == UInt8(ascii: ";") {
                self.index += 1
                self.skip { $0 == UInt8(ascii: " ") }
                guard self.parseKey() != nil else { return false }
                if self.current == UInt8(ascii: "=") {
                    self.index += 1
                    guard self.parseBareItem() != nil else { return false }
                }
            }
            return true
        }

        /// §4.2.3.3: key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" ).
        private mutating func parseKey() -> String? {
            guard let first = self.current, Self.isLowerAlpha(first) || first == UInt8(ascii: "*") else { return nil }
            let start = self.index
            self.skip { Self.isLowerAlpha($0) || Self.isDigit($0) || "_-.*".utf8.contains($0) }
            return String(decoding: self.bytes[start..<self.index], as: UTF8.self)
        }

        /// §4.2.3.1.
        private mutating func parseBareItem() -> Item? {
            guard let byte = self.current else { return nil }
            switch byte {
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return self.parseNumber()
            case UInt8(ascii: "\""):
                return self.parseString()
            case UInt8(ascii: "*"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"):
                let start = self.index
                self.skip { DirectiveScanner.isNameByte($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "/") }
                return .token(String(decoding: self.bytes[start..<self.index], as: UTF8.self))
            case UInt8(ascii: ":"):
                return self.parseByteSequence()
            case UInt8(ascii: "?"):
                self.index += 1
                guard let value = self.current, value == UInt8(ascii: "0") || value == UInt8(ascii: "1") else {
                    return nil
                }
                self.index += 1
                return .boolean(value == UInt8(ascii: "1"))
            default:
                return nil
            }
        }

        /// §4.2.4: an Integer has at most 15 digits; a Decimal at most 12 before the point and
        /// 1 to 3 after it.
        private mutating func parseNumber() -> Item? {
            var negative = false
            if self.current == UInt8(ascii: "-") {
                negative = true
                self.index += 1
            }
            guard let first = self.current, Self.isDigit(first) else { return nil }
            var integerDigits: [UInt8] = []
            var fractionDigits: [UInt8] = []
            var isDecimal = false
            while let byte = self.current {
                if Self.isDigit(byte) {
                    if isDecimal { fractionDigits.append(byte) } else { integerDigits.append(byte) }
                } else if byte == UInt8(ascii: "."), !isDecimal {
                    guard integerDigits.count <= 12 else { return nil }
                    isDecimal = true
                } else {
                    break
                }
                self.index += 1
                if !isDecimal, integerDigits.count > 15 { return nil }
                if isDecimal, fractionDigits.count > 3 { return nil }
            }
            if isDecimal {
                guard !fractionDigits.isEmpty else { return nil }
                let text = String(decoding: integerDigits + [UInt8(ascii: ".")] + fractionDigits, as: UTF8.self)
                guard let value = Double(text) else { return nil }
                return .decimal(negative ? -value : value)
            }
            // 15 digits always fit in Int64.
            var value: Int64 = 0
            for digit in integerDigits { value = value * 10 + Int64(digit - UInt8(ascii: "0")) }
            return .integer(negative ? -value : value)
        }

        /// §4.2.5: printable ASCII, with `\"` and `\\` the only escapes.
        private mutating func parseString() -> Item? {
            self.index += 1
            var result: [UInt8] = []
            while let byte = self.current {
                self.index += 1
                switch byte {
                case UInt8(ascii: "\\"):
                    guard let escaped = self.current, escaped == UInt8(ascii: "\"") || escaped == UInt8(ascii: "\\")
                    else { return nil }
                    result.append(escaped)
                    self.index += 1
                case UInt8(ascii: "\""):
                    return .string(String(decoding: result, as: UTF8.self))
                case 0x20...0x7E:
                    result.append(byte)
                default:
                    return nil
                }
            }
            return nil
        }

        /// §4.2.7: ":" *base64 ":"; the content is checked for base64 characters, not decoded.
        private mutating func parseByteSequence() -> Item? {
            self.index += 1
            let start = self.index
            while let byte = self.current, byte != UInt8(ascii: ":") {
                guard
                    Self.isLowerAlpha(byte) || Self.isDigit(byte) || (byte >= 0x41 && byte <= 0x5A)
                        || byte == UInt8(ascii: "+") || byte == UInt8(ascii: "/") || byte == UInt8(ascii: "=")
                else { return nil }
                self.index += 1
            }
            guard self.current == UInt8(ascii: ":") else { return nil }
            let content = String(decoding: self.bytes[start..<self.index], as: UTF8.self)
            self.index += 1
            return .byteSequence(content)
        }

        private mutating func skip(while predicate: (UInt8) -> Bool) {
            while let byte = self.current, predicate(byte) { self.index += 1 }
        }

        private static func isLowerAlpha(_ byte: UInt8) -> Bool {
            byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")
        }

        private static func isDigit(_ byte: UInt8) -> Bool {
            byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
        }
    }
}
