vcl 4.1;

# builtin.vcl — Lacquer's built-in behaviour, written in its own configuration language.
#
# It is appended after your file, as Varnish does: when your vcl_recv ends without
# return (...), the vcl_recv below runs next. Lacquer runs this file alone when started
# without --config. This is Varnish 4.1's builtin.vcl, changed where RFC 9111 says more than Varnish
# does: the decision to store is made by the RFC rules before vcl_backend_response runs, and
# error pages are short text.

sub vcl_recv {
    if (req.method == "PRI") {
        # HTTP/2 connection preface over HTTP/1: not supported.
        return (synth(405));
    }
    if (req.method == "CONNECT" || req.method == "TRACE") {
        # Lacquer is not a forward proxy, and TRACE would echo credentials back.
        return (synth(405, req.method + " is not supported"));
    }
    if (req.method == "PURGE") {
        # purge_acl holds the --purge-acl addresses (loopback by default); declare your own
        # "acl purge_acl { ... }" to replace it.
        if (!client.ip ~ purge_acl) {
            return (synth(403, "PURGE is not allowed from this address"));
        }
        return (purge);
    }
    if (req.method != "GET" && req.method != "HEAD") {
        if (req.method !~ "^(POST|PUT|DELETE|OPTIONS|PATCH|QUERY|PROPFIND|PROPPATCH|MKCOL|COPY|MOVE|LOCK|UNLOCK|SEARCH|BIND|REBIND|UNBIND|ACL|REPORT|MKACTIVITY|CHECKOUT|MERGE|M-SEARCH|NOTIFY|SUBSCRIBE|UNSUBSCRIBE|MKCALENDAR|LINK|UNLINK|SOURCE)$") {
            # An extension method Lacquer gives no meaning to (RFC 9110 section 9.1). Handle it
            # in your vcl_recv to use it, e.g. a BAN method that calls ban().
            return (synth(501, "Method not implemented"));
        }
        # Only GET and HEAD are cached; other methods go to the backend (an unsafe method's
        # success invalidates what is stored for its URL, RFC 9111 section 4.4).
        return (pass);
    }
    if (req.http.Cookie) {
        # Personalised requests are not cacheable by default. Unlike Varnish, a request with
        # Authorization is looked up: RFC 9111 section 3.5 lets the response decide (public,
        # s-maxage, must-revalidate), and a stored response is only reused under those rules.
        return (pass);
    }
    return (hash);
}

sub vcl_pipe {
    return (pipe);
}

sub vcl_pass {
    return (fetch);
}

sub vcl_hash {
    hash_data(req.url);
    if (req.http.host) {
        hash_data(req.http.host);
    } else {
        hash_data(server.ip);
    }
    return (lookup);
}

sub vcl_purge {
    return (synth(200, "Purged"));
}

sub vcl_hit {
    if (obj.ttl >= 0s) {
        # A fresh hit: deliver it.
        return (deliver);
    }
    if (obj.ttl + obj.grace > 0s) {
        # Stale but within grace: deliver it; a background fetch refreshes it.
        return (deliver);
    }
    # Too old: fetch, and deliver the result.
    return (miss);
}

sub vcl_miss {
    return (fetch);
}

sub vcl_deliver {
    return (deliver);
}

sub vcl_synth {
    set resp.http.Content-Type = "text/plain; charset=utf-8";
    synthetic(resp.status + " " + resp.reason + {"
"});
    return (deliver);
}

sub vcl_backend_fetch {
    return (fetch);
}

sub vcl_backend_response {
    # beresp.ttl, beresp.grace, beresp.keep and beresp.uncacheable already hold RFC 9111's
    # verdict (Cache-Control, Expires, Set-Cookie, Vary: *, private, no-store, Authorization),
    # so nothing is second-guessed here. An uncacheable answer is remembered as hit-for-miss.
    return (deliver);
}

sub vcl_backend_error {
    set beresp.http.Content-Type = "text/plain; charset=utf-8";
    synthetic(beresp.status + " " + beresp.reason + {"
"});
    return (deliver);
}

sub vcl_init {
    return (ok);
}

sub vcl_fini {
    return (ok);
}
