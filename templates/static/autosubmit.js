// Submits the OAuth form_post response at once; without JavaScript the button does it.
document.getElementById("form-post").submit();
