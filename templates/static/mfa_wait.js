// The waiting page of a second factor that waits for an approval elsewhere (a push to a phone).
// Without this script the page refreshes itself and the user presses "Continue"; with it, an
// approved page goes on by itself (the same POST the button sends).
'use strict';
(function () {
  const main = document.querySelector('main[data-approved="true"]');
  const form = document.getElementById('mfa-answer');
  if (main && form) form.submit();
})();
