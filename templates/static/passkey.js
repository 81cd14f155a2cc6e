// The WebAuthn ceremony of the passkey page (mfa::passkey): reads the options the broker put in
// the form's data-options, asks the browser for a new credential (data-mode "register") or an
// assertion ("authenticate"), and posts the credential as JSON in the form's "credential" field.
// No inline script: the page's policy allows this site's script files only.
(function () {
  "use strict";
  var form = document.getElementById("mfa-answer");
  var start = document.getElementById("passkey-start");
  var field = document.getElementById("passkey-credential");
  var show = function (id) {
    document.getElementById(id).hidden = false;
  };
  if (!form || !start || !field) {
    return;
  }
  if (!window.PublicKeyCredential || !navigator.credentials) {
    show("passkey-unsupported");
    return;
  }

  var fromB64u = window.conciergeB64u.decode;
  var toB64u = window.conciergeB64u.encode;
  var withIds = function (list) {
    return (list || []).map(function (c) {
      var copy = Object.assign({}, c);
      copy.id = fromB64u(c.id);
      return copy;
    });
  };

  var mode = form.dataset.mode;
  var options = JSON.parse(form.dataset.options).publicKey;
  options.challenge = fromB64u(options.challenge);
  if (mode === "register") {
    options.user = Object.assign({}, options.user, { id: fromB64u(options.user.id) });
    options.excludeCredentials = withIds(options.excludeCredentials);
  } else {
    options.allowCredentials = withIds(options.allowCredentials);
  }

  var encode = function (cred) {
    var r = cred.response;
    var out = {
      id: cred.id,
      rawId: toB64u(cred.rawId),
      type: cred.type,
      extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: { clientDataJSON: toB64u(r.clientDataJSON) },
    };
    if (mode === "register") {
      out.response.attestationObject = toB64u(r.attestationObject);
      if (r.getTransports) {
        out.response.transports = r.getTransports();
      }
    } else {
      out.response.authenticatorData = toB64u(r.authenticatorData);
      out.response.signature = toB64u(r.signature);
      out.response.userHandle = toB64u(r.userHandle);
    }
    return JSON.stringify(out);
  };

  var run = function () {
    start.disabled = true;
    document.getElementById("passkey-cancelled").hidden = true;
    var ask =
      mode === "register"
        ? navigator.credentials.create({ publicKey: options })
        : navigator.credentials.get({ publicKey: options });
    ask
      .then(function (cred) {
        field.value = encode(cred);
        form.submit();
      })
      .catch(function () {
        // Cancelled, timed out, or no authenticator with this credential.
        show("passkey-cancelled");
        start.disabled = false;
      });
  };
  start.hidden = false;
  start.addEventListener("click", run);
})();
