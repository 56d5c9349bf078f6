vcl 4.1;

# An API front: query strings are normalised so equivalent URLs share one object,
# Authorization does not prevent caching of public GETs (the key ignores it), and
# a long grace keeps answering while the origin is slow or down.

import std;

backend api {
    .host = "127.0.0.1";
    .port = "9000";
    .connect_timeout = 1s;
    .first_byte_timeout = 10s;
    .max_connections = 200;
}

sub vcl_recv {
    # Sort parameters and drop tracking ones: /v1/items?b=2&a=1&utm_source=x -> /v1/items?a=1&b=2
    set req.url = regsuball(req.url, "([?&])(utm_[a-z]+|fbclid|gclid)=[^&]*", "\1");
    set req.url = regsuball(req.url, "&&+", "&");
    set req.url = regsub(req.url, "[?&]+$", "");
    set req.url = std.querysort(req.url);

    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # Per-user endpoints stay private.
    if (req.url ~ "^/v1/(me|account)") {
        return (pass);
    }
    # Public data: cacheable even with a token; the key below does not include it.
    if (req.http.Authorization && req.url ~ "^/v1/public/") {
        return (hash);
    }
}

sub vcl_hash {
    hash_data(req.url);
    # One variant per Accept type, never per token.
    if (req.http.Accept ~ "application/xml") {
        hash_data("xml");
    }
    return (lookup);
}

sub vcl_backend_response {
    if (beresp.status >= 500) {
        # Don't cache errors; retry once on another connection.
        if (bereq.retries < 1) {
            return (retry);
        }
        set beresp.uncacheable = true;
        set beresp.ttl = 5s;
        return (deliver);
    }
    if (beresp.ttl <= 0s && beresp.http.Cache-Control !~ "private|no-store") {
        set beresp.ttl = 30s;
    }
    set beresp.grace = 6h;
    set beresp.keep = 1d;
    return (deliver);
}

sub vcl_deliver {
    unset resp.http.Server;
    set resp.http.X-Hits = obj.hits;
}
