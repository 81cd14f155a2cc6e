// base64url <-> ArrayBuffer for the WebAuthn pages' scripts (passkey.js, passkey_login.js):
// WebAuthn's JSON carries its binary members as base64url without padding (WebAuthn L3 §5.1.8).
// Loaded before them; no inline script: the pages' policy allows this site's script files only.
(function () {
  "use strict";
  window.conciergeB64u = {
    decode: function (s) {
      var b64 = s.replace(/-/g, "+").replace(/_/g, "/");
      while (b64.length % 4) {
        b64 += "=";
      }
      var bin = atob(b64);
      var out = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) {
        out[i] = bin.charCodeAt(i);
      }
      return out.buffer;
    },
    encode: function (buf) {
      if (!buf) {
        return null;
      }
      var bytes = new Uint8Array(buf);
      var bin = "";
      for (var i = 0; i < bytes.length; i++) {
        bin += String.fromCharCode(bytes[i]);
      }
      return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    },
  };
})();
