/* Heatmap cells and other elements of class "tip" carry their details in a title (the browser's own tooltip
   on hover). Hovering one also writes it into its table's readout line; a tap or click (phones have no hover)
   pins it in a small tooltip box. No network, no libraries. */
(function () {
  "use strict";
  var tip = document.getElementById("cl-tip");
  function target(ev) { return ev.target && ev.target.closest ? ev.target.closest(".tip[title]") : null; }
  function readout(el) {
    var table = el.closest("[data-readout]");
    var out = table ? document.getElementById(table.getAttribute("data-readout")) : null;
    if (out) { out.textContent = el.getAttribute("title").replace(/\n/g, "; "); }
  }
  function hide() { if (tip) { tip.hidden = true; } }
  document.addEventListener("mouseover", function (ev) {
    var el = target(ev);
    if (el) { readout(el); }
  });
  document.addEventListener("click", function (ev) {
    var el = target(ev);
    if (!el || !tip) { hide(); return; }
    readout(el);
    tip.textContent = el.getAttribute("title");
    tip.hidden = false;
    var width = document.documentElement.clientWidth;
    tip.style.left = Math.max(window.scrollX + 4, Math.min(ev.pageX + 10, window.scrollX + width - tip.offsetWidth - 8)) + "px";
    tip.style.top = (ev.pageY + 14) + "px";
  });
  document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") { hide(); } });
})();
