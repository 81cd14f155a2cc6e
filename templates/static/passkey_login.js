// Passwordless sign-in on the sign-in page (flow/step/passkey_sign_in.rs): reads the challenge
// the broker put in the form's data-options, offers the user's passkeys in the browser's autofill
// of the email field (conditional UI: autocomplete="username webauthn") and behind the "Sign in
// with a passkey" button, and posts the assertion as JSON in the form's "credential" field.
// No inline script: the page's policy allows this site's script files only.
(function () {
  "use strict";
  var form = document.getElementById("passkey-login-form");
  var button = document.getElementById("passkey-login");
  var field = document.getElementById("passkey-login-credential");
  var show = function (id, on) {
    var el = document.getElementById(id);
    if (el) {
      el.hidden = !on;
    }
  };
  if (!form || !button || !field) {
    return;
  }
  if (!window.PublicKeyCredential || !navigator.credentials || !window.AbortController) {
    show("passkey-login-unsupported", true);
    return;
  }

  var fromB64u = window.conciergeB64u.decode;
  var toB64u = window.conciergeB64u.encode;

  var options = JSON.parse(form.dataset.options).publicKey;
  options.challenge = fromB64u(options.challenge);
  options.allowCredentials = [];

  var encode = function (cred) {
    var r = cred.response;
    return JSON.stringify({
      id: cred.id,
      rawId: toB64u(cred.rawId),
      type: cred.type,
      extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: {
        clientDataJSON: toB64u(r.clientDataJSON),
        authenticatorData: toB64u(r.authenticatorData),
        signature: toB64u(r.signature),
        userHandle: toB64u(r.userHandle),
      },
    });
  };
  var sent = false;
  var send = function (cred) {
    if (sent || !cred) {
      return;
    }
    sent = true;
    field.value = encode(cred);
    form.submit();
  };

  // The autofill request waits in the background until the user picks a passkey there; the
  // button's request replaces it (a browser runs one request at a time).
  var pending = null;
  var conditional = function () {
    if (!PublicKeyCredential.isConditionalMediationAvailable) {
      return;
    }
    PublicKeyCredential.isConditionalMediationAvailable().then(function (ok) {
      if (!ok || sent) {
        return;
      }
      pending = new AbortController();
      navigator.credentials
        .get({ publicKey: options, mediation: "conditional", signal: pending.signal })
        .then(send)
        .catch(function () {
          // Aborted for the button, or nothing picked: the password form still works.
        });
    });
  };

  button.addEventListener("click", function () {
    if (pending) {
      pending.abort();
      pending = null;
    }
    show("passkey-login-cancelled", false);
    button.disabled = true;
    navigator.credentials
      .get({ publicKey: options })
      .then(send)
      .catch(function () {
        // Cancelled, timed out, or no passkey for this site on this device.
        show("passkey-login-cancelled", true);
        button.disabled = false;
        conditional();
      });
  });
  button.hidden = false;
  conditional();
})();
