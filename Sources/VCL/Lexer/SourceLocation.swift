/// Where something is in a VCL source: the file's name (as given in `VCLSource.name`), a 1-based
/// line and a 1-based column counted in UTF-8 bytes (columns and carets agree for ASCII sources,
/// which is what VCL files are).
public struct SourceLocation: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(self.file):\(self.line):\(self.column)" }
}

/// One source text split into bytes and lines, kept so a diagnostic can quote its line.
struct SourceFile: Sendable {
    let name: String
    let bytes: [UInt8]
    /// Byte offset of the first byte of each line.
    let lineStarts: [Int]

    init(name: String, text: String) {
        self.name = name
        self.bytes = Array(text.utf8)
        var starts = [0]
        for (i, b) in self.bytes.enumerated() where b == UInt8(ascii: "\n") {
            starts.append(i + 1)
        }
        self.lineStarts = starts
    }

    /// The text of 1-based line `line`, without its line terminator.
    func lineText(_ line: Int) -> String {
        guard line >= 1, line <= self.lineStarts.count else { return "" }
        let start = self.lineStarts[line - 1]
        var end = line < self.lineStarts.count ? self.lineStarts[line] - 1 : self.bytes.count
        if end > start, self.bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        guard end > start else { return "" }
        return String(decoding: self.bytes[start..<end], as: UTF8.self)
    }
}
