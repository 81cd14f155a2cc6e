#!/usr/bin/env python3
"""A browser's password sign-in at Concierge, driven generically (used by bench/lib.sh).

    login_flow.py BASE EMAIL PASSWORD CLIENT_ID REDIRECT_URI OUT_DIR

Starts where an app sends a browser: GET /authorize (code flow, scope `openid offline_access`),
follows the redirects to the login page, fills its form without knowing its fields: every hidden
input as served (csrf_token, return_to, journey, ... whatever this build renders), the password
into its password input, the email into its email (or first text) input; posts it to the form's
own action and follows the redirects until one points at REDIRECT_URI with a code, keeping the
cookies all the way. Then checks that the session alone gets a code (authorize again, one 302 to
REDIRECT_URI) and writes to OUT_DIR:
  cookie.txt     the Cookie header value for the broker (all its cookies)
  authorize.txt  the path and query of that authorize request

Also importable: `Browser(base).sign_in(...)` with an optional `trace(method, url, phase)`
callback, called with phase "before" and "after" around every request (bench/roundtrips.sh
counts the database statements in between). Standard library only.
"""
import html.parser
import http.cookiejar
import sys
import urllib.error
import urllib.parse
import urllib.request


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


class _Forms(html.parser.HTMLParser):
    """Every <form>: method, action and inputs (name, type, value), attribute values unescaped."""

    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"method": (a.get("method") or "get").lower(), "action": a.get("action") or "", "inputs": []})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["inputs"].append(((a.get("type") or "text").lower(), a["name"], a.get("value") or ""))


def login_form(page):
    """The form with a password field (the sign-in form), or None."""
    p = _Forms()
    p.feed(page)
    for f in p.forms:
        if any(t == "password" for t, _, _ in f["inputs"]):
            return f
    return None


class Browser:
    def __init__(self, base, trace=None):
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.op = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)
        self.trace = trace or (lambda method, url, phase: None)
        self.requests = []

    def call(self, url, data=None, headers=None):
        """One request, no redirect followed: (status, headers, body)."""
        url = urllib.parse.urljoin(self.base + "/", url)
        method = "POST" if data is not None else "GET"
        req = urllib.request.Request(url, data=data, headers=headers or {})
        self.trace(method, url, "before")
        try:
            r = self.op.open(req)
            out = r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            out = e.code, dict(e.headers), e.read().decode()
        self.requests.append((method, url, out[0]))
        self.trace(method, url, "after")
        return out

    def cookie(self):
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)

    def follow(self, url, data=None, headers=None, stop=None, hops=10):
        """Requests `url`, then follows Location headers (GET) until an answer without one, or
        one pointing at `stop`. Returns (status, headers, body, url of the last request or the
        stop Location)."""
        for _ in range(hops):
            status, h, body = self.call(url, data, headers)
            loc = h.get("Location") or h.get("location")
            if status not in (301, 302, 303, 307) or not loc:
                return status, h, body, url
            loc = urllib.parse.urljoin(url if url.startswith("http") else self.base + url, loc)
            if stop and loc.startswith(stop):
                return status, h, body, loc
            url, data, headers = loc, None, None
        raise SystemExit(f"login_flow: more than {hops} redirects from {url}")

    def sign_in(self, email, password, client_id, redirect_uri):
        """The full password login from /authorize to the code. Returns the authorize path."""
        authorize = "/authorize?" + urllib.parse.urlencode(
            {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": "openid offline_access"}
        )
        status, _, page, url = self.follow(authorize, stop=redirect_uri)
        form = login_form(page) if status == 200 else None
        if form is None:
            raise SystemExit(f"login_flow: no sign-in form at the end of {authorize} ({status} from {url})")
        # Every hidden field as served; the password field gets the password, the visible
        # email (or text) field the email.
        fields = []
        for t, n, v in form["inputs"]:
            if t == "hidden":
                fields.append((n, v))
            elif t == "password":
                fields.append((n, password))
            elif t in ("email", "text") and not any(f == email for _, f in fields):
                fields.append((n, email))
        if not any(f == email for _, f in fields):
            fields.append(("email", email))
        action = urllib.parse.urljoin(url, form["action"] or url)
        body = urllib.parse.urlencode(fields).encode()
        status, h, page, end = self.follow(
            action, body, {"Content-Type": "application/x-www-form-urlencoded"}, stop=redirect_uri
        )
        if not end.startswith(redirect_uri) or "code" not in urllib.parse.parse_qs(urllib.parse.urlparse(end).query):
            raise SystemExit(f"login_flow: sign-in ended at {status} {end}, not at {redirect_uri} with a code")
        return authorize

    def authorize_with_session(self, authorize, redirect_uri):
        """One authorize with the session alone: must answer one redirect to the app with a code."""
        status, h, body = self.call(authorize)
        loc = h.get("Location") or h.get("location") or ""
        if status not in (302, 303) or not loc.startswith(redirect_uri) or "code=" not in loc:
            raise SystemExit(f"login_flow: authorize with the session answered {status} {loc!r}, not a code")
        return loc


def main():
    base, email, password, client_id, redirect_uri, out = sys.argv[1:7]
    b = Browser(base)
    authorize = b.sign_in(email, password, client_id, redirect_uri)
    b.authorize_with_session(authorize, redirect_uri)
    with open(f"{out}/cookie.txt", "w") as f:
        f.write(b.cookie())
    with open(f"{out}/authorize.txt", "w") as f:
        f.write(authorize)


if __name__ == "__main__":
    main()
