/* Sign-in page: show the refusal message after a failed attempt (?failed=1). */
"use strict";

(() => {
  const params = new URLSearchParams(window.location.search);
  if (params.get("failed") === "1") {
    document.getElementById("failed").hidden = false;
    document.getElementById("token").focus();
  }
})();
