#!/usr/bin/env python3
"""A real SAML 2.0 service provider for the tests of the broker as an IdP, built on PyPI
`pysaml2` (signatures checked by Debian's `xmlsec1`, against the certificate of the broker's
metadata only). Listens on 127.0.0.1 only.

  saml_sp.py --port P [--key K --cert C] [--signed both|response|assertion]
                   [--enc-key K --enc-cert C] [--allow-unsolicited]
                   port 0: any free port; with a key pair, the AuthnRequests are signed
                   (RSA-SHA256); --signed: what the SP requires signed (default both);
                   with an encryption key pair (pysaml2 `encryption_keypairs`), encrypted
                   assertions are decrypted with it (xmlsec1); --allow-unsolicited: pysaml2's
                   allow_unsolicited, Responses that answer no request of this SP
                   (IdP-initiated) are accepted (still checked otherwise)

Endpoints:
  GET  /metadata   the SP's own metadata (pysaml2 create_metadata_string: entityID, ACS
                   HTTP-POST, SingleLogoutService HTTP-Redirect, its keys); after
                   /metadata-mode?mode=garbage, a document that is not metadata (mode=good
                   back); /metadata-mode answers JSON {garbage_served: how many times}
  GET  /setup?idp=URL   reads the IdP's metadata (once) without sending a request (204)
  GET  /login?idp=URL[&passive=1][&force=1][&nameid=FORMAT][&mfa=1][&binding=post]
                   the IdP's metadata is read from URL (once), then an AuthnRequest over
                   HTTP-Redirect: a 302 to the IdP's single sign-on endpoint, RelayState "rs-1";
                   mfa=1 asks for https://refeds.org/profile/mfa (RequestedAuthnContext);
                   with binding=post, 200 with JSON {action, SAMLRequest, RelayState}: the
                   fields of the HTTP-POST form the browser would submit
  POST /acs        the IdP's Response (HTTP-POST): validated by pysaml2 (signature, issuer,
                   audience, recipient, InResponseTo against the requests this SP sent, time);
                   200 with JSON {name_id, name_id_format, ava, in_response_to, session_index,
                   class_ref, relay_state, encrypted}, or 400 with JSON {error, detail};
                   encrypted: how many EncryptedAssertions the Response held as posted
  GET  /logout?name_id=N[&format=F][&session_index=S][&binding=post][&sign=0|1]
                 [&destination=URL][&id=ID][&encrypt=1|sp]
                   a LogoutRequest (pysaml2 create_logout_request) to the IdP's
                   SingleLogoutService of metadata (or `destination`), RelayState "rs-lo",
                   signed when the SP has a key (unless sign=0): over HTTP-Redirect a 302 with
                   X-Request-Id; over HTTP-POST 200 with JSON {action, SAMLRequest, RelayState};
                   encrypt=1: the NameID sent as an EncryptedID to the IdP metadata's
                   encryption certificate (encrypt=sp: to this SP's own certificate)
  GET  /answer?mode=signed|unsigned|badsig|fault|post|post-unsigned
                   how /sls and /soap-sls answer the IdP's LogoutRequests from now on (204);
                   fault: /soap-sls answers a SOAP Fault with status 500; post: /sls answers
                   over HTTP-POST (200 with JSON {action, SAMLResponse, RelayState}: the form
                   the browser would submit), its LogoutResponse signed enveloped (or not)
  POST /soap-sls   the IdP's LogoutRequest over the SOAP binding (back channel; its enveloped
                   signature required and checked by pysaml2 against the IdP's metadata, the
                   Destination this endpoint, the NameID the one /acs got; see soap_sls for why
                   not through handle_logout_request) answered with a SOAP envelope holding
                   pysaml2's LogoutResponse, signed when the SP has a key (per /answer)
  GET  /soap-seen  JSON {count, requests: [{name_id, session_index, status}], errors: [..]}:
                   what /soap-sls was sent and answered
  GET  /sls?SAMLRequest=…  the IdP's LogoutRequest (HTTP-Redirect, its query signature
                   required): answered by pysaml2 (handle_logout_request: the signature checked
                   against the metadata, the NameID the one /acs got) with a 302 back to the
                   IdP, a LogoutResponse signed when the SP has a key (per /answer); or 400 JSON
  GET  /sls        the IdP's LogoutResponse (HTTP-Redirect): read by pysaml2
                   (parse_logout_request_response: issuer, destination, status) and its query
                   signature checked against the IdP's metadata certificate (required);
                   200 with JSON {in_response_to, status, sub_status, relay_state,
                   signature_ok}, or 400 with JSON {error, detail}
It prints "ready <base>" on stdout when it listens.
"""

import argparse
import base64
import html
import json
import re
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, BINDING_SOAP, samlp
from saml2.soap import parse_soap_enveloped_saml_logout_request
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, AuthnContextClassRef, NameID
from saml2.s_utils import status_message_factory, success_status_factory
from saml2.samlp import STATUS_UNKNOWN_PRINCIPAL, RequestedAuthnContext
from saml2.sigver import (
    SIG_RSA_SHA256,
    RSACrypto,
    pem_format,
    pre_encryption_part,
    verify_redirect_signature,
)
from saml2.xmldsig import DIGEST_SHA256

REFEDS_MFA = "https://refeds.org/profile/mfa"

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, default=0)
p.add_argument("--key")
p.add_argument("--signed", choices=["both", "response", "assertion"], default="both",
               help="what the SP requires signed")
p.add_argument("--cert")
p.add_argument("--enc-key", help="the key encrypted assertions are decrypted with (PEM)")
p.add_argument("--enc-cert", help="its certificate (PEM)")
p.add_argument("--allow-unsolicited", action="store_true")
ARGS = p.parse_args()

LOCK = threading.Lock()
STATE = {"client": None, "idp": None, "outstanding": {}}


def sp_config(base):
    """The SP's pysaml2 configuration (without the IdP's metadata)."""
    keys = {}
    if ARGS.key:
        keys = {
            "key_file": ARGS.key,
            "cert_file": ARGS.cert,
            "signing_algorithm": SIG_RSA_SHA256,
            "digest_algorithm": DIGEST_SHA256,
        }
    if ARGS.enc_key:
        keys["encryption_keypairs"] = [{"key_file": ARGS.enc_key, "cert_file": ARGS.enc_cert}]
    return {
        "entityid": f"{base}/metadata",
        "service": {
            "sp": {
                "endpoints": {
                    "assertion_consumer_service": [(f"{base}/acs", BINDING_HTTP_POST)],
                    "single_logout_service": [
                        (f"{base}/sls", BINDING_HTTP_REDIRECT),
                        (f"{base}/soap-sls", BINDING_SOAP),
                    ],
                },
                "want_response_signed": ARGS.signed in ("both", "response"),
                "want_assertions_signed": ARGS.signed in ("both", "assertion"),
                "authn_requests_signed": bool(ARGS.key),
                "allow_unsolicited": ARGS.allow_unsolicited,
                "name_id_format": NAMEID_FORMAT_EMAILADDRESS,
            }
        },
        "xmlsec_binary": "/usr/bin/xmlsec1",
        "allow_unknown_attributes": True,
        **keys,
    }


def client_for(base, idp_metadata_url):
    with LOCK:
        if STATE["client"] is not None:
            return STATE["client"], STATE["idp"]
        with urllib.request.urlopen(idp_metadata_url, timeout=10) as r:
            md = r.read()
        f = tempfile.NamedTemporaryFile(suffix=".xml", delete=False)
        f.write(md)
        f.close()
        conf = SPConfig()
        conf.load({**sp_config(base), "metadata": {"local": [f.name]}})
        client = Saml2Client(config=conf)
        idp = next(iter(conf.metadata.identity_providers()))
        STATE["client"], STATE["idp"] = client, idp
        return client, idp


def form_fields(form, message):
    """The action and the `message` and RelayState fields of pysaml2's auto-posting form."""
    value = lambda name: html.unescape(re.search(f'name="{name}" value="([^"]*)"', form).group(1))
    return {
        "action": html.unescape(re.search(r'action="([^"]*)"', form).group(1)),
        message: value(message),
        "RelayState": value("RelayState"),
    }


def with_encrypted_id(client, idp, request, name_id, to_self):
    """`request` (a LogoutRequest) with its NameID encrypted as a saml:EncryptedID. pysaml2 has no
    EncryptedID for LogoutRequests, so the NameID is encrypted the way pysaml2 encrypts
    assertions: its xmlsec1 backend (`crypto.encrypt`), a pysaml2 template
    (`pre_encryption_part`: AES-256-GCM content, RSA-OAEP key transport), to the encryption
    certificate of the IdP's metadata (`to_self`: to this SP's own certificate, which the IdP
    cannot decrypt)."""
    if to_self:
        with open(ARGS.cert) as f:
            pem = f.read()
    else:
        certs = [c for _, c in client.metadata.certs(idp, "idpsso", "encryption")]
        if not certs:
            raise ValueError("the IdP's metadata has no encryption certificate")
        pem = pem_format(certs[0]).decode()
    cert = tempfile.NamedTemporaryFile(suffix=".pem", delete=False, mode="w")
    cert.write(pem)
    cert.close()
    template = str(pre_encryption_part(
        msg_enc="http://www.w3.org/2009/xmlenc11#aes256-gcm",
        key_enc="http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
    ))
    plain = name_id.to_string()
    if isinstance(plain, bytes):
        plain = plain.decode()
    tpl = tempfile.NamedTemporaryFile(suffix=".xml", delete=False, mode="w")
    tpl.write(template)
    tpl.close()
    encrypted = client.sec.crypto.encrypt(plain, cert.name, tpl.name, "aes-256")
    if isinstance(encrypted, bytes):
        encrypted = encrypted.decode()
    encrypted = re.sub(r"^<\?xml[^>]*\?>", "", encrypted.strip())
    element = (
        '<saml:EncryptedID xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">'
        f"{encrypted}</saml:EncryptedID>"
    )
    out, n = re.subn(r"<(\w+:)?NameID\b.*?</(\w+:)?NameID>", lambda _: element, request,
                     count=1, flags=re.S)
    if n != 1:
        raise ValueError("no NameID in the LogoutRequest")
    return out


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):  # quiet
        pass

    def send(self, status, headers, body):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def base(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def logout(self, q):
        client, idp = STATE["client"], STATE["idp"]
        binding = BINDING_HTTP_POST if q.get("binding") == "post" else BINDING_HTTP_REDIRECT
        sign = bool(ARGS.key) and q.get("sign") != "0"
        destination = q.get("destination") or next(
            iter(client.metadata.single_logout_service(idp, binding, "idpsso"))
        )["location"]
        name_id = NameID(text=q["name_id"], format=q.get("format", NAMEID_FORMAT_EMAILADDRESS))
        extra = {}
        if q.get("session_index"):
            extra["session_indexes"] = [q["session_index"]]
        if q.get("id"):
            extra["message_id"] = q["id"]
        reqid, request = client.create_logout_request(
            destination,
            idp,
            name_id=name_id,
            sign=sign and binding == BINDING_HTTP_POST,
            sign_alg=SIG_RSA_SHA256,
            digest_alg=DIGEST_SHA256,
            **extra,
        )
        request = str(request)
        if q.get("encrypt") in ("1", "sp"):
            if binding != BINDING_HTTP_REDIRECT:
                raise ValueError("encrypt=1 is for HTTP-Redirect (the query signature)")
            request = with_encrypted_id(client, idp, request, name_id, q["encrypt"] == "sp")
        info = client.apply_binding(
            binding,
            request,
            destination,
            "rs-lo",
            sign=sign and binding == BINDING_HTTP_REDIRECT,
            sigalg=SIG_RSA_SHA256,
        )
        if binding == BINDING_HTTP_POST:
            form = info["data"]
            fields = form_fields(form, "SAMLRequest")
            headers = [("Content-Type", "application/json"), ("X-Request-Id", reqid)]
            return self.send(200, headers, json.dumps(fields))
        location = dict(info["headers"])["Location"]
        return self.send(302, [("Location", location), ("X-Request-Id", reqid)], "")

    def idp_logout(self, msg):
        """The IdP's LogoutRequest: its query signature checked by pysaml2 against the IdP's
        metadata certificate, the NameID the one this SP got at /acs; the answer (pysaml2
        handle_logout_request) a 302 back to the IdP, signed unless STATE["answer"] says
        "unsigned", its Signature spoilt for "badsig"."""
        client = STATE["client"]
        try:
            if "Signature" not in msg or "SigAlg" not in msg:
                raise ValueError("the LogoutRequest is not signed")
            certs = [c for _, c in client.metadata.certs(STATE["idp"], "idpsso", "signing")]
            if not any(
                verify_redirect_signature(msg, client.sec.sec_backend or RSACrypto(None), cert)
                for cert in certs
            ):
                raise ValueError("the LogoutRequest's signature does not verify")
            with LOCK:
                name_id, answer = STATE.get("name_id"), STATE.get("answer", "signed")
            if answer in ("post", "post-unsigned"):
                return self.idp_logout_post(client, msg, name_id, answer == "post")
            info = client.handle_logout_request(
                msg["SAMLRequest"],
                name_id,
                BINDING_HTTP_REDIRECT,
                sign=bool(ARGS.key) and answer != "unsigned",
                sign_alg=SIG_RSA_SHA256,
                relay_state=msg.get("RelayState"),
                sigalg=msg["SigAlg"],
                signature=msg["Signature"],
            )
            location = dict(info["headers"])["Location"]
            if answer == "badsig":
                location = re.sub(r"Signature=[^&]*", "Signature=AAAA", location)
            with LOCK:
                STATE["idp_logouts"] = STATE.get("idp_logouts", 0) + 1
            return self.send(302, [("Location", location)], "")
        except Exception as e:
            body = {"error": type(e).__name__, "detail": str(e)}
            return self.send(400, [("Content-Type", "application/json")], json.dumps(body))

    def soap_sls(self, body):
        """The IdP's LogoutRequest over SOAP, read with pysaml2's own pieces but not its
        handle_logout_request: pysaml2's SOAP parsing re-serialises the enveloped message with
        ElementTree (prefixes renamed ns0, ns1...) before checking its signature, which then
        fails for any signer (exclusive c14n keeps prefixes). So the request's bytes are taken
        out of the Body as sent, their enveloped signature is required and checked by pysaml2
        (correctly_signed_logout_request: the SAML profile, then xmlsec1 against the IdP's
        metadata certificate), the Destination must be this endpoint, the Issuer the IdP, the
        NameID the one /acs got; the answer is pysaml2's LogoutResponse (create_logout_response,
        signed when the SP has a key, per /answer) in pysaml2's SOAP envelope."""
        client = STATE["client"]
        seen = STATE.setdefault("soap", {"requests": [], "errors": []})
        try:
            m = re.search(r"<(?:[\w.-]+:)?Body[^>]*>(.*)</(?:[\w.-]+:)?Body\s*>", body, re.S)
            if m is None:
                raise ValueError("no SOAP Body")
            inner = m.group(1).strip()
            # The element as it was sent: the same bytes pysaml2's parser would have re-written.
            expected = parse_soap_enveloped_saml_logout_request(body)
            if samlp.logout_request_from_string(expected) is None:
                raise ValueError("not a LogoutRequest")
            request = client.sec.correctly_signed_logout_request(inner, must=True)
            if request.destination != f"{self.base()}/soap-sls":
                raise ValueError(f"Destination {request.destination}")
            if request.issuer.text.strip() != STATE["idp"]:
                raise ValueError(f"Issuer {request.issuer.text}")
            with LOCK:
                name_id, answer = STATE.get("name_id"), STATE.get("answer", "signed")
            if answer == "fault":
                fault = (
                    '<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body>'
                    "<S:Fault><faultcode>S:Server</faultcode><faultstring>busy</faultstring>"
                    "</S:Fault></S:Body></S:Envelope>"
                )
                with LOCK:
                    seen["errors"].append("fault answered")
                return self.send(500, [("Content-Type", "text/xml")], fault)
            if request.name_id == name_id and client.local_logout(name_id):
                status = success_status_factory()
            else:
                status = status_message_factory("Wrong user", STATUS_UNKNOWN_PRINCIPAL)
            response = client.create_logout_response(
                request,
                bindings=[BINDING_SOAP],
                status=status,
                sign=bool(ARGS.key) and answer != "unsigned",
                sign_alg=SIG_RSA_SHA256,
                digest_alg=DIGEST_SHA256,
            )
            data = client.apply_binding(BINDING_SOAP, response, "", response=True, sign=False)["data"]
            if isinstance(data, bytes):
                data = data.decode()
            code = re.search(r'StatusCode Value="([^"]*)"', data).group(1)
            if answer == "badsig":
                data = re.sub(
                    r"(<(?:\w+:)?SignatureValue>)([A-Za-z0-9+/])",
                    lambda m: m.group(1) + ("B" if m.group(2) == "A" else "A"),
                    data,
                    count=1,
                )
            with LOCK:
                seen["requests"].append({
                    "name_id": request.name_id.text,
                    "session_index": [s.text for s in request.session_index],
                    "status": code,
                })
            return self.send(200, [("Content-Type", "text/xml; charset=utf-8")], data)
        except Exception as e:
            with LOCK:
                seen["errors"].append(f"{type(e).__name__}: {e}")
            return self.send(400, [("Content-Type", "application/json")],
                             json.dumps({"error": type(e).__name__, "detail": str(e)}))

    def idp_logout_post(self, client, msg, name_id, sign):
        """The answer over HTTP-POST instead (pysaml2's parse_logout_request, which checks the
        query signature again, create_logout_response with an enveloped signature, apply_binding
        to the IdP's HTTP-POST SingleLogoutService): 200 with JSON {action, SAMLResponse,
        RelayState}, the fields of the form the browser would submit."""
        req = client.parse_logout_request(
            msg["SAMLRequest"],
            BINDING_HTTP_REDIRECT,
            relay_state=msg.get("RelayState"),
            sigalg=msg["SigAlg"],
            signature=msg["Signature"],
        )
        if req.message.name_id == name_id and client.local_logout(name_id):
            status = success_status_factory()
        else:
            status = status_message_factory("Wrong user", STATUS_UNKNOWN_PRINCIPAL)
        response = client.create_logout_response(
            req.message,
            bindings=[BINDING_HTTP_POST],
            status=status,
            sign=sign,
            sign_alg=SIG_RSA_SHA256,
            digest_alg=DIGEST_SHA256,
        )
        rinfo = client.response_args(req.message, [BINDING_HTTP_POST])
        info = client.apply_binding(
            BINDING_HTTP_POST, response, rinfo["destination"], msg.get("RelayState"),
            response=True, sign=False,
        )
        form = info["data"]
        fields = form_fields(form, "SAMLResponse")
        with LOCK:
            STATE["idp_logouts"] = STATE.get("idp_logouts", 0) + 1
        return self.send(200, [("Content-Type", "application/json")], json.dumps(fields))

    def sls(self, query):
        client, idp = STATE["client"], STATE["idp"]
        msg = dict(urllib.parse.parse_qsl(query))
        if "SAMLRequest" in msg:
            return self.idp_logout(msg)
        try:
            certs = [c for _, c in client.metadata.certs(idp, "idpsso", "signing")]
            if "Signature" not in msg or "SigAlg" not in msg:
                raise ValueError("the LogoutResponse is not signed")
            signature_ok = any(
                verify_redirect_signature(msg, client.sec.sec_backend or RSACrypto(None), cert)
                for cert in certs
            )
            if not signature_ok:
                raise ValueError("the LogoutResponse's signature does not verify")
            resp = client.parse_logout_request_response(msg["SAMLResponse"], BINDING_HTTP_REDIRECT)
            if resp is None:
                raise ValueError("no response")
            status = resp.response.status.status_code
            sub = status.status_code.value if status.status_code is not None else None
            body = {
                "in_response_to": resp.in_response_to,
                "issuer": resp.response.issuer.text,
                "status": status.value,
                "sub_status": sub,
                "relay_state": msg.get("RelayState"),
                "signature_ok": signature_ok,
            }
            return self.send(200, [("Content-Type", "application/json")], json.dumps(body))
        except Exception as e:
            body = {"error": type(e).__name__, "detail": str(e)}
            return self.send(400, [("Content-Type", "application/json")], json.dumps(body))

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/sls":
            return self.sls(url.query)
        if url.path == "/metadata":
            with LOCK:
                garbage = STATE.get("metadata_mode") == "garbage"
            if garbage:
                with LOCK:
                    STATE["garbage_served"] = STATE.get("garbage_served", 0) + 1
                return self.send(200, [("Content-Type", "application/samlmetadata+xml")],
                                 "<html>not metadata</html>")
            conf = SPConfig()
            conf.load(sp_config(self.base()))
            md = create_metadata_string(None, config=conf, valid=None)
            if isinstance(md, bytes):
                md = md.decode()
            return self.send(200, [("Content-Type", "application/samlmetadata+xml")], md)
        if url.path == "/metadata-mode":
            with LOCK:
                mode = dict(urllib.parse.parse_qsl(url.query)).get("mode")
                if mode:
                    STATE["metadata_mode"] = mode
                served = STATE.get("garbage_served", 0)
            return self.send(200, [("Content-Type", "application/json")],
                             json.dumps({"garbage_served": served}))
        if url.path == "/soap-seen":
            with LOCK:
                seen = STATE.get("soap", {"requests": [], "errors": []})
                body = {"count": len(seen["requests"]), **seen}
            return self.send(200, [("Content-Type", "application/json")], json.dumps(body))
        if url.path == "/answer":
            with LOCK:
                STATE["answer"] = dict(urllib.parse.parse_qsl(url.query)).get("mode", "signed")
            return self.send(204, [], "")
        if url.path == "/logout":
            try:
                return self.logout(dict(urllib.parse.parse_qsl(url.query)))
            except Exception as e:  # a test peer: show what went wrong
                return self.send(500, [("Content-Type", "text/plain")], f"SP error: {e!r}")
        if url.path == "/setup":
            try:
                client_for(self.base(), dict(urllib.parse.parse_qsl(url.query))["idp"])
                return self.send(204, [], "")
            except Exception as e:  # a test peer: show what went wrong
                return self.send(500, [("Content-Type", "text/plain")], f"SP error: {e!r}")
        if url.path != "/login":
            return self.send(404, [], "not found")
        q = dict(urllib.parse.parse_qsl(url.query))
        try:
            client, idp = client_for(self.base(), q["idp"])
            extra = {}
            if q.get("passive") == "1":
                extra["is_passive"] = "true"
            if q.get("force") == "1":
                extra["force_authn"] = "true"
            if q.get("mfa") == "1":
                extra["requested_authn_context"] = RequestedAuthnContext(
                    authn_context_class_ref=[AuthnContextClassRef(text=REFEDS_MFA)],
                    comparison="exact",
                )
            if ARGS.key:
                # pysaml2 would sign with SHA-1, which the broker refuses.
                extra["sigalg"] = SIG_RSA_SHA256
                extra["digest_alg"] = DIGEST_SHA256
            if q.get("nameid"):
                extra["nameid_format"] = q["nameid"]
            binding = BINDING_HTTP_POST if q.get("binding") == "post" else BINDING_HTTP_REDIRECT
            reqid, info = client.prepare_for_authenticate(
                entityid=idp, relay_state="rs-1", binding=binding, **extra
            )
            with LOCK:
                STATE["outstanding"][reqid] = "/"
            if binding == BINDING_HTTP_POST:
                form = info["data"]
                fields = form_fields(form, "SAMLRequest")
                headers = [("Content-Type", "application/json"), ("X-Request-Id", reqid)]
                return self.send(200, headers, json.dumps(fields))
            location = dict(info["headers"])["Location"]
            return self.send(302, [("Location", location), ("X-Request-Id", reqid)], "")
        except Exception as e:  # a test peer: show what went wrong
            return self.send(500, [("Content-Type", "text/plain")], f"SP error: {e!r}")

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        length = int(self.headers.get("Content-Length", "0"))
        if path == "/soap-sls":
            return self.soap_sls(self.rfile.read(length).decode())
        if path != "/acs":
            return self.send(404, [], "not found")
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        client = STATE["client"]
        try:
            with LOCK:
                outstanding = dict(STATE["outstanding"])
            resp = client.parse_authn_request_response(
                form["SAMLResponse"], BINDING_HTTP_POST, outstanding=outstanding
            )
            if resp is None:
                raise ValueError("no response")
            if resp.assertion is None:
                # pysaml2 leaves an EncryptedAssertion none of its keys decrypts out, silently.
                raise ValueError("no assertion could be read (none decrypted with the SP's keys)")
            with LOCK:
                STATE["name_id"] = resp.name_id
            posted = samlp.response_from_string(base64.b64decode(form["SAMLResponse"]))
            statement = resp.assertion.authn_statement[0]
            body = {
                "name_id": resp.name_id.text,
                "name_id_format": resp.name_id.format,
                "ava": resp.ava,
                "in_response_to": resp.in_response_to,
                "session_index": statement.session_index,
                "class_ref": statement.authn_context.authn_context_class_ref.text,
                "relay_state": form.get("RelayState"),
                "encrypted": len(posted.encrypted_assertion),
            }
            return self.send(200, [("Content-Type", "application/json")], json.dumps(body))
        except Exception as e:
            body = {"error": type(e).__name__, "detail": str(e)}
            return self.send(400, [("Content-Type", "application/json")], json.dumps(body))


server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
print(f"ready http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
