#!/usr/bin/env python3
"""A real SAML 2.0 identity provider for the browser tests, built on PyPI `pysaml2` (signatures
and encryption through Debian's `xmlsec1`). Listens on 127.0.0.1 only.

  saml_idp.py --port P --key idp.key --cert idp.crt --sp-metadata-url URL
              [--sign-response] [--encrypt]   (the login form's defaults)

Endpoints:
  GET  /metadata   the IdP's metadata (entity ID = {base}/metadata)
  GET  /sso        AuthnRequest (HTTP-Redirect binding, its signature required and checked against
                   the SP metadata): a login form (any user name; the
                   button "Deny" answers with a RequestDenied status)
  POST /login      the form: a signed Response posted to the SP's ACS (HTTP-POST binding)
  GET  /slo        LogoutRequest from the SP (HTTP-Redirect, signature checked): recorded, answered
                   with a LogoutResponse; or the SP's LogoutResponse to an IdP-initiated logout
  GET  /logout-user?user=U   IdP-initiated Single Logout of U's session at the SP (redirect)
  GET  /log        JSON of the logout messages received
It prints "ready <base>" on stdout when it listens.
"""

import argparse
import functools
import html
import json
import sys
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import saml2.entity
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, samlp
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor
from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_PERSISTENT, NameID
from saml2.server import Server
from saml2.sigver import SIG_RSA_SHA256
from saml2.xmldsig import DIGEST_SHA256

ALGS = {"sign_alg": SIG_RSA_SHA256, "digest_alg": DIGEST_SHA256}

# pysaml2 encrypts with 3DES unless told otherwise; the broker (rightly) refuses 3DES.
_pre_encryption_part = saml2.entity.pre_encryption_part
saml2.entity.pre_encryption_part = functools.partial(
    _pre_encryption_part, msg_enc="http://www.w3.org/2001/04/xmlenc#aes256-cbc"
)

PASSWORD_PROTECTED = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--sp-metadata-url", required=True)
    p.add_argument("--sign-response", action="store_true")
    p.add_argument("--encrypt", action="store_true")
    return p.parse_args()


ARGS = parse_args()
BASE = f"http://127.0.0.1:{ARGS.port}"
LOCK = threading.Lock()
LOG = []  # logout messages received
SESSIONS = {}  # user -> (sp entity id, NameID text, SessionIndex)


def config(sp_metadata_file):
    conf = IdPConfig()
    conf.load(
        {
            "entityid": f"{BASE}/metadata",
            "service": {
                "idp": {
                    "endpoints": {
                        "single_sign_on_service": [(f"{BASE}/sso", BINDING_HTTP_REDIRECT)],
                        "single_logout_service": [(f"{BASE}/slo", BINDING_HTTP_REDIRECT)],
                    },
                    "policy": {
                        "default": {
                            "lifetime": {"minutes": 5},
                            "attribute_restrictions": None,
                            "name_form": NAME_FORMAT_URI,
                        }
                    },
                    "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                    "sign_response": ARGS.sign_response,
                    "sign_assertion": True,
                    # The broker signs its AuthnRequests: check them.
                    "want_authn_requests_signed": True,
                }
            },
            "key_file": ARGS.key,
            "cert_file": ARGS.cert,
            "encryption_keypairs": [{"key_file": ARGS.key, "cert_file": ARGS.cert}],
            "xmlsec_binary": "/usr/bin/xmlsec1",
            "metadata": {"local": [sp_metadata_file]},
            "signing_algorithm": SIG_RSA_SHA256,
            "digest_algorithm": "http://www.w3.org/2001/04/xmlenc#sha256",
        }
    )
    return conf


def load_idp():
    import tempfile

    with urllib.request.urlopen(ARGS.sp_metadata_url, timeout=10) as r:
        sp_metadata = r.read()
    f = tempfile.NamedTemporaryFile(suffix=".xml", delete=False)
    f.write(sp_metadata)
    f.close()
    conf = config(f.name)
    return conf, Server(config=conf)


CONF, IDP = load_idp()

# ... and its session key with it: AES-256 (the template above names aes256-cbc).
_encrypt_assertion = IDP.sec.encrypt_assertion
IDP.sec.encrypt_assertion = lambda statement, enc_key, template, key_type=None, node_xpath=None: (
    _encrypt_assertion(statement, enc_key, template, "aes-256", node_xpath)
)


def session_indexes(name_id_text):
    """The SessionIndex values this IdP issued for a NameID."""
    name_id = NameID(format=NAMEID_FORMAT_PERSISTENT, text=name_id_text)
    # pysaml2 keeps each assertion's list of AuthnStatements.
    return [
        s.session_index
        for statements in IDP.session_db.get_authn_statements(name_id)
        for s in statements
    ]


def parse_request(q):
    """The AuthnRequest of an HTTP-Redirect query, its signature checked with the SP metadata."""
    return IDP.parse_authn_request(
        q["SAMLRequest"],
        BINDING_HTTP_REDIRECT,
        relay_state=q.get("RelayState") or None,
        sigalg=q.get("SigAlg") or None,
        signature=q.get("Signature") or None,
    )


def page(body, status=200):
    return status, {"Content-Type": "text/html; charset=utf-8"}, body


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):  # quiet
        pass

    def send(self, status, headers, body):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        for k, v in headers.items() if isinstance(headers, dict) else headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def query(self):
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        try:
            if path == "/metadata":
                xml = str(entity_descriptor(CONF))
                return self.send(200, {"Content-Type": "application/samlmetadata+xml"}, xml)
            if path == "/sso":
                return self.send(*self.sso())
            if path == "/slo":
                return self.send(*self.slo())
            if path == "/logout-user":
                return self.send(*self.logout_user())
            if path == "/log":
                with LOCK:
                    return self.send(200, {"Content-Type": "application/json"}, json.dumps(LOG))
            return self.send(404, {}, "not found")
        except Exception as e:  # a test peer: show what went wrong
            return self.send(500, {"Content-Type": "text/plain"}, f"IdP error: {e!r}")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        try:
            if urllib.parse.urlsplit(self.path).path == "/login":
                return self.send(*self.login(form))
            return self.send(404, {}, "not found")
        except Exception as e:
            return self.send(500, {"Content-Type": "text/plain"}, f"IdP error: {e!r}")

    def sso(self):
        q = self.query()
        req = parse_request(q)
        fields = "".join(
            f'<input type="hidden" name="{k}" value="{html.escape(q.get(k, ""))}">'
            for k in ("SAMLRequest", "RelayState", "SigAlg", "Signature")
        )
        return page(
            "<!doctype html><title>pysaml2 IdP</title><h1>pysaml2 IdP</h1>"
            f'<p id="request-id">{html.escape(req.message.id)}</p>'
            f'<form method="post" action="/login">{fields}'
            '<input id="user" name="user" autocomplete="username">'
            f'<label><input type="checkbox" id="encrypt" name="encrypt" value="1"{" checked" if ARGS.encrypt else ""}> encrypt</label>'
            f'<label><input type="checkbox" id="sign-response" name="sign_response" value="1"{" checked" if ARGS.sign_response else ""}> sign the Response</label>'
            '<button id="signin" name="action" value="signin">Sign in</button>'
            '<button id="deny" name="action" value="deny">Deny</button></form>'
        )

    def login(self, form):
        req = parse_request(form)
        args = IDP.response_args(req.message, [BINDING_HTTP_POST])
        relay_state = form.get("RelayState", "")
        if form.get("action") == "deny":
            resp = IDP.create_error_response(
                args["in_response_to"],
                args["destination"],
                info=(samlp.STATUS_REQUEST_DENIED, "the user said no"),
                sign=form.get("sign_response") == "1",
                **ALGS,
            )
        else:
            user = form["user"]
            name_id = NameID(format=NAMEID_FORMAT_PERSISTENT, text=f"pysaml2-{user}")
            identity = {
                "mail": [f"{user}@saml.example"],
                "displayName": [f"SAML {user}"],
                "eduPersonAffiliation": ["staff", "member"],
            }
            extra = {}
            if form.get("encrypt") == "1":
                extra = {"encrypt_assertion": True, "encrypted_advice_attributes": False}
            resp = IDP.create_authn_response(
                identity,
                userid=user,
                name_id=name_id,
                authn={"class_ref": PASSWORD_PROTECTED, "authn_auth": BASE},
                sign_response=form.get("sign_response") == "1",
                sign_assertion=True,
                session_not_on_or_after=None,
                **ALGS,
                **args,
                **extra,
            )
            with LOCK:
                SESSIONS[user] = (args["sp_entity_id"], name_id.text)
        http = IDP.apply_binding(
            BINDING_HTTP_POST, str(resp), args["destination"], relay_state, response=True
        )
        return page(http["data"])

    def slo(self):
        q = self.query()
        if "SAMLResponse" in q:
            res = IDP.parse_logout_request_response(q["SAMLResponse"], BINDING_HTTP_REDIRECT)
            with LOCK:
                LOG.append({"kind": "LogoutResponse", "status": res.response.status.status_code.value})
            return page('<p id="idp-logged-out">logged out at the SP</p>')
        req = IDP.parse_logout_request(
            q["SAMLRequest"],
            BINDING_HTTP_REDIRECT,
            relay_state=q.get("RelayState") or None,
            sigalg=q.get("SigAlg") or None,
            signature=q.get("Signature") or None,
        )
        msg = req.message
        issued = session_indexes(msg.name_id.text) if msg.name_id else []
        with LOCK:
            LOG.append(
                {
                    "kind": "LogoutRequest",
                    "name_id": msg.name_id.text if msg.name_id else None,
                    "session_index": [s.text for s in msg.session_index],
                    "issued_session_indexes": issued,
                    "signed": "Signature" in q,
                }
            )
        resp = IDP.create_logout_response(msg, [BINDING_HTTP_REDIRECT])
        binding, destination = IDP.pick_binding(
            "single_logout_service", [BINDING_HTTP_REDIRECT], "spsso", req
        )
        http = IDP.apply_binding(
            binding,
            str(resp),
            destination,
            q.get("RelayState", ""),
            response=True,
            sign=True,
            sigalg=SIG_RSA_SHA256,
        )
        return 302, http["headers"], ""

    def logout_user(self):
        user = self.query()["user"]
        with LOCK:
            sp, name_id = SESSIONS[user]
        issued = session_indexes(name_id)
        # The user's latest session at the IdP (the device that is logging out).
        session_index = issued[-1]
        with LOCK:
            LOG.append(
                {
                    "kind": "IdpLogoutRequest",
                    "name_id": name_id,
                    "session_index": [session_index],
                    "issued_session_indexes": issued,
                }
            )
        destinations = IDP.metadata.single_logout_service(sp, BINDING_HTTP_REDIRECT, "spsso")
        destination = destinations[0]["location"]
        req_id, req = IDP.create_logout_request(
            destination,
            sp,
            name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=name_id),
            session_indexes=[session_index],
            sign=False,
        )
        http = IDP.apply_binding(
            BINDING_HTTP_REDIRECT,
            str(req),
            destination,
            "idp-relay",
            sign=True,
            sigalg=SIG_RSA_SHA256,
        )
        return 302, http["headers"], ""


def main():
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    print(f"ready {BASE}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
