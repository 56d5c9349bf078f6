/// The syntax tree the parser builds and the checker reads (libvcc keeps no tree; we do, so the
/// checker and the lowering are separate, testable passes).

/// A whole program: the declarations of every source, in order.
struct Program: Sendable {
    var declarations: [Declaration] = []
}

enum Declaration: Sendable {
    case backend(BackendDecl)
    case probe(ProbeDecl)
    case acl(ACLDecl)
    case sub(SubDecl)
    case `import`(name: String, location: SourceLocation)
}

/// A name as written, with where it was written.
struct Name: Sendable, Hashable {
    var text: String
    var location: SourceLocation
    var length: Int

    init(_ token: Token) {
        self.text = token.text
        self.location = token.location
        self.length = token.length
    }

    init(text: String, location: SourceLocation, length: Int) {
        self.text = text
        self.location = location
        self.length = length
    }
}

/// `.field = value;` inside a backend or probe. A probe field may be an inline probe block.
struct Field: Sendable {
    enum Value: Sendable {
        case expr(Expr)
        /// `.request = "GET / HTTP/1.1" "Host: x";` — several strings.
        case strings([String])
        case block(ProbeDecl)
    }

    var name: Name
    var value: Value
}

struct BackendDecl: Sendable {
    var name: Name
    var fields: [Field]
}

struct ProbeDecl: Sendable {
    var name: Name?
    var fields: [Field]
    var location: SourceLocation
}

struct ACLEntry: Sendable {
    var negated: Bool
    var address: String
    var prefixLength: Int?
    var location: SourceLocation
    var length: Int
}

struct ACLDecl: Sendable {
    var name: Name
    var entries: [ACLEntry]
}

struct SubDecl: Sendable {
    var name: Name
    var body: [Stmt]
}

/// A statement; `location` is where its first token is.
struct Stmt: Sendable {
    indirect enum Kind: Sendable {
        case set(target: Name, value: Expr)
        case unset(target: Name)
        /// `if (c) {…} elseif (c) {…} else {…}`: branches in order, then the else body.
        case `if`(branches: [(condition: Expr, body: [Stmt])], elseBody: [Stmt]?)
        case `return`(action: Name, args: [Expr])
        case call(sub: Name)
        /// `new NAME = module.constructor(args);` (vcl_init)
        case new(name: Name, constructor: Name, args: [Expr])
        /// A function or method call used as a statement: `hash_data(req.url);`, `rr.add_backend(b1);`.
        case expr(Expr)
    }

    var kind: Kind
    var location: SourceLocation
}

/// An expression; `location`/`length` mark what a caret should point at.
struct Expr: Sendable {
    indirect enum Kind: Sendable {
        case string(String)
        case integer(Int)
        case real(Double)
        case duration(Double)
        case bool(Bool)
        /// A dotted name: a variable, a backend, an ACL, a director.
        case name(String)
        case call(function: String, args: [Expr])
        case unary(Punct, Expr)
        case binary(Punct, Expr, Expr)
    }

    var kind: Kind
    var location: SourceLocation
    var length: Int
}
