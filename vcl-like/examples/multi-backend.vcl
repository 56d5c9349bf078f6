vcl 4.1;

# Several origins with health probes: /static goes to a hash director (each URL to a
# stable server), everything else round-robins over the app servers, and a fallback
# director serves a maintenance backend when all of them are sick.

import directors;
import std;

probe healthz {
    .url = "/healthz";
    .expected_response = 200;
    .interval = 5s;
    .timeout = 1s;
    .window = 5;
    .threshold = 3;
}

backend app1 { .host = "10.0.1.1"; .port = "8080"; .probe = healthz; }
backend app2 { .host = "10.0.1.2"; .port = "8080"; .probe = healthz; }
backend static1 {
    .host = "10.0.2.1";
    .port = "80";
    .probe = {
        .request = "HEAD /ping HTTP/1.1" "Host: static" "Connection: close";
        .interval = 10s;
    }
}
backend static2 { .host = "10.0.2.2"; .port = "80"; .max_connections = 50; }
backend maintenance { .host = "127.0.0.1"; .port = "8081"; }

sub vcl_init {
    new apps = directors.round_robin();
    apps.add_backend(app1);
    apps.add_backend(app2);

    new statics = directors.hash();
    statics.add_backend(static1, 1.0);
    statics.add_backend(static2, 2.0);

    new safe = directors.fallback();
    safe.add_backend(app1);
    safe.add_backend(app2);
    safe.add_backend(maintenance);

    new canary = directors.random();
    canary.add_backend(app1, 9);
    canary.add_backend(app2, 1);
}

sub vcl_recv {
    if (req.url ~ "^/static/") {
        set req.backend_hint = statics.backend(req.url);
    } elseif (req.http.X-Canary == "1") {
        set req.backend_hint = canary.backend();
    } else {
        set req.backend_hint = apps.backend();
    }
}

sub vcl_backend_fetch {
    if (bereq.retries > 0) {
        # The first answer was a server error: try again through the fallback director.
        set bereq.backend = safe.backend();
    }
}

sub vcl_backend_response {
    if (beresp.status >= 500 && bereq.retries == 0) {
        std.log("retrying " + bereq.url + " after " + beresp.status);
        return (retry);
    }
    set beresp.http.X-Backend = beresp.backend;
}
