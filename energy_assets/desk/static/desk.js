// The desk page keeps itself current: the service pushes the changed part of the page as a
// Server-Sent Event ("live"), and the trader list ("nav"); the page never reloads. The browser's
// EventSource resumes with Last-Event-ID after a drop; if it gives up (the service restarting),
// the page opens a new one a second later, from the last event it showed.
(function () {
  "use strict";
  var root = document.documentElement;
  var live = document.getElementById("live");
  var pick = document.getElementById("pick");
  var status = document.getElementById("connection");
  var lastId = root.getAttribute("data-event-id") || "";
  var selected = pick ? pick.value : "";

  function fmtAge(s) {
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }

  function tickAges() {
    var els = document.querySelectorAll("[data-ts]");
    var now = Date.now();
    for (var i = 0; i < els.length; i++) {
      var t = Date.parse(els[i].getAttribute("data-ts"));
      if (!isNaN(t)) els[i].textContent = fmtAge(Math.max(0, (now - t) / 1000));
    }
  }

  function setStatus(text, cls) {
    if (!status) return;
    status.textContent = text;
    status.className = "connection " + cls;
  }

  function connect() {
    var url = root.getAttribute("data-events");
    if (lastId) url += "?since=" + encodeURIComponent(lastId);
    var source = new EventSource(url);
    source.onopen = function () { setStatus("live", "live"); };
    source.addEventListener("live", function (event) {
      live.innerHTML = event.data;
      lastId = event.lastEventId;
      root.setAttribute("data-event-id", lastId);
      window.deskUpdates = (window.deskUpdates || 0) + 1;
      tickAges();
      setStatus("live", "live");
    });
    source.addEventListener("nav", function (event) {
      if (!pick) return;
      pick.innerHTML = event.data;
      pick.value = selected;
    });
    source.onerror = function () {
      setStatus("reconnecting…", "reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        setTimeout(connect, 1000);
      }
    };
  }

  if (pick) pick.addEventListener("change", function () { location.href = pick.value; });
  tickAges();
  setInterval(tickAges, 1000);
  connect();
})();
