// Upload an ISO or image with a progress bar. The file goes as the raw request body (no
// multipart), so that LIMEN can stream it into libvirt in bounded memory.
(function () {
  "use strict";

  function describe(error) {
    var fields = error.details && error.details.fields;
    var text = error.code + ": " + error.message;
    if (fields) text += " " + Object.keys(fields).map(function (k) { return fields[k]; }).join(" ");
    return text;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("upload");
    if (!form) return;
    var fileInput = form.elements.file, nameInput = form.elements.name;
    var bar = form.querySelector("progress"), percent = form.querySelector("output");
    var box = form.querySelector(".upload-progress"), status = form.querySelector(".upload-status");

    fileInput.addEventListener("change", function () {
      var file = fileInput.files[0];
      if (!file) return;
      if (!nameInput.value) nameInput.value = file.name.replace(/\.(iso|qcow2|img)$/i, "");
      if (/\.(qcow2|img)$/i.test(file.name)) form.elements.kind.value = "image";
      if (/\.iso$/i.test(file.name)) form.elements.kind.value = "iso";
    });

    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var file = fileInput.files[0];
      if (!file) return;
      var query = new URLSearchParams({kind: form.elements.kind.value, name: nameInput.value,
                                       os_kind: form.elements.os_kind.value});
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action + "?" + query.toString());
      xhr.setRequestHeader("X-CSRFToken", form.elements.csrf_token.value);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.setRequestHeader("Accept", "application/json");
      box.hidden = false;
      bar.value = 0;
      percent.textContent = "0 %";
      status.textContent = "Uploading " + file.name + "…";
      status.className = "upload-status";
      form.querySelector("button").disabled = true;
      xhr.upload.addEventListener("progress", function (p) {
        if (!p.lengthComputable) return;
        var value = Math.floor(100 * p.loaded / p.total);
        bar.value = value;
        percent.textContent = value + " %";
      });
      xhr.addEventListener("load", function () {
        form.querySelector("button").disabled = false;
        var answer = {};
        try { answer = JSON.parse(xhr.responseText); } catch (ignored) { /* not JSON */ }
        if (xhr.status === 201) {
          bar.value = 100;
          percent.textContent = "100 %";
          status.textContent = "Uploaded " + answer.name + ".";
          fileInput.value = "";  // not form.reset(): that would reset the progress too
          nameInput.value = "";
          htmx.ajax("GET", form.dataset.library, {target: "#library", swap: "outerHTML"});
        } else {
          status.textContent = answer.error ? describe(answer.error) : "The upload failed (HTTP " + xhr.status + ").";
          status.className = "upload-status error";
        }
      });
      xhr.addEventListener("error", function () {
        form.querySelector("button").disabled = false;
        status.textContent = "The connection to LIMEN was lost; nothing was kept. Try again.";
        status.className = "upload-status error";
      });
      xhr.send(file);
    });
  });
})();
