// The desk page keeps itself current: the service pushes the changed part of the page
// ("live") and the trader list ("nav") as Server-Sent Events; the page never reloads.
// The browser's tabs share one event stream, held by desk-worker.js as a SharedWorker:
// browsers open at most six HTTP/1.1 connections per host, so a stream per tab leaves a
// seventh tab loading forever. Where SharedWorker is missing, the same script runs as this
// tab's own worker (a stream per tab, as before).
(function () {
  "use strict";
  var root = document.documentElement;
  var live = document.getElementById("live");
  var pick = document.getElementById("pick");
  var status = document.getElementById("connection");
  var topic = root.getAttribute("data-topic");
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
      if (isNaN(t)) continue;
      // A price older than the vendor's latest revision slot: a newer one is out.
      var staleAt = Date.parse(els[i].getAttribute("data-stale-after") || "");
      var stale = !isNaN(staleAt) && now >= staleAt;
      els[i].classList.toggle("stale", stale);
      els[i].textContent = fmtAge(Math.max(0, (now - t) / 1000)) + (stale ? " · stale" : "");
    }
  }

  function setStatus(text, cls) {
    if (!status) return;
    status.textContent = text;
    status.className = "connection " + cls;
  }

  function receive(event) {
    var message = event.data;
    if (message.type === "live" && message.topic === topic) {
      live.innerHTML = message.html;
      root.setAttribute("data-event-id", message.id);
      window.deskUpdates = (window.deskUpdates || 0) + 1;
      tickAges();
      setStatus("live", "live");
    } else if (message.type === "nav" && pick) {
      pick.innerHTML = message.html;
      pick.value = selected;
    } else if (message.type === "status") {
      setStatus(message.text, message.state);
    } else if (message.type === "login") {
      location.reload();
    }
  }

  var port;
  if (typeof SharedWorker === "function") {
    port = new SharedWorker("/static/desk-worker.js", {name: "desk"}).port;
    port.onmessage = receive;
  } else {
    port = new Worker("/static/desk-worker.js");
    port.onmessage = receive;
  }

  function follow() {
    port.postMessage({type: "follow", topic: topic, since: root.getAttribute("data-event-id") || ""});
  }

  if (pick) pick.addEventListener("change", function () { location.href = pick.value; });
  window.addEventListener("pagehide", function () { port.postMessage({type: "leave"}); });
  window.addEventListener("pageshow", function (event) { if (event.persisted) follow(); });
  tickAges();
  setInterval(tickAges, 1000);
  follow();
})();
