vcl 4.1;

# A CMS front (WordPress-like): static assets are cached without cookies, logged-in
# users bypass the cache, and trusted hosts may PURGE.

import std;

backend cms {
    .host = "127.0.0.1";
    .port = "8080";
    .first_byte_timeout = 30s;
}

acl purgers {
    "127.0.0.1";
    "::1";
    "10.0.0.0"/8;
    ! "10.0.0.66";      # the build box may not purge
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        return (purge);
    }

    # Static assets: the same for everybody, so drop cookies and cache them.
    if (req.url ~ "(?i)\.(css|js|png|jpe?g|gif|svg|ico|woff2?)(\?.*)?$") {
        unset req.http.Cookie;
        return (hash);
    }

    # The admin and the login page are never cached.
    if (req.url ~ "^/(wp-admin|wp-login\.php)") {
        return (pass);
    }

    # Logged-in users see personalised pages.
    if (req.http.Cookie ~ "wordpress_logged_in_|comment_author_") {
        return (pass);
    }

    # Anonymous visitors: strip analytics cookies so they can share cached pages.
    if (req.http.Cookie) {
        set req.http.Cookie = regsuball(req.http.Cookie, "(^|;\s*)(_ga[^=]*|_gid|__utm[a-z]+)=[^;]*", "");
        set req.http.Cookie = regsub(req.http.Cookie, "^;\s*", "");
        if (req.http.Cookie == "") {
            unset req.http.Cookie;
        }
    }
    # Falls through to builtin.vcl's vcl_recv.
}

sub vcl_backend_response {
    if (bereq.url ~ "(?i)\.(css|js|png|jpe?g|gif|svg|ico|woff2?)(\?.*)?$") {
        unset beresp.http.Set-Cookie;
        set beresp.ttl = 1d;
    }
    set beresp.grace = 1h;
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
