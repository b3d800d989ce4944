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
      var text = fmtAge(Math.max(0, (now - t) / 1000)) + (stale ? " · stale" : "");
      if (els[i].textContent !== text) {  // each text written is layout again, every second
        els[i].classList.toggle("stale", stale);
        els[i].textContent = text;
      }
    }
  }

  // Gate closure (templates/gate.html): each step counts down to its data-gate-closure and
  // changes state by gate.state_at's rule: closed from gate closure on; "closing soon" while
  // an open position (data-held: the trader's, or on the desk's board any trader's) has under
  // 15 minutes left; else open.
  var CLOSING_SOON_MS = 15 * 60 * 1000;
  var STATE_TEXT = {open: "open", closing: "closing soon: open position", closed: "closed"};
  var clocks = {};

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function fmtLeft(ms) {
    var s = Math.floor(ms / 1000);
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + ":" + pad(m) : String(m)) + ":" + pad(s % 60);
  }

  function tickGates(now) {
    var rows = document.querySelectorAll("tr[data-gate-closure]");
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      var closes = Date.parse(row.getAttribute("data-gate-closure"));
      if (isNaN(closes)) continue;
      var held = row.getAttribute("data-held") === "1";
      var left = closes - now;
      var state = left <= 0 ? "closed" : held && left < CLOSING_SOON_MS ? "closing" : "open";
      if (row.getAttribute("data-state") !== state) {
        row.setAttribute("data-state", state);
        row.classList.remove("open", "closing", "closed");
        row.classList.add(state);
      }
      var leftCell = row.querySelector("td.left"), stateCell = row.querySelector("td.state");
      var leftText = state === "closed" ? "closed" : fmtLeft(left);
      if (leftCell && leftCell.textContent !== leftText) leftCell.textContent = leftText;
      if (stateCell && stateCell.textContent !== STATE_TEXT[state]) {
        stateCell.textContent = STATE_TEXT[state];
      }
    }
    var zones = document.querySelectorAll("time.clock[data-tz]");
    for (var j = 0; j < zones.length; j++) {
      var zone = zones[j].getAttribute("data-tz");
      try {
        clocks[zone] = clocks[zone] || new Intl.DateTimeFormat("en-GB", {
          timeZone: zone, hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short"
        });
        var clock = clocks[zone].format(now);
        if (zones[j].textContent !== clock) zones[j].textContent = clock;
      } catch (err) { /* a zone this browser does not know: the server's abbreviation stays */ }
    }
  }

  function tick() {
    tickAges();
    tickGates(Date.now());
  }

  function setStatus(text, cls) {
    if (!status) return;
    status.textContent = text;
    status.className = "connection " + cls;
  }

  // A push changes only what differs from the page shown: replacing a busy page whole (1,600
  // rows) cost the browser ~0.25 s of layout a push, a row ~15 ms (benchmarks/README.md).
  // Rows of a `tbody[data-rows]` are matched by their version (`data-v`, given by the service
  // process named in `data-rows`) and kept, moved, added or removed; any other node is kept
  // when equal, else replaced.
  function patchChildren(old, fresh) {
    var a = Array.prototype.slice.call(old.childNodes);
    var b = Array.prototype.slice.call(fresh.childNodes);
    if (a.length !== b.length) {
      old.replaceChildren.apply(old, b);
      return;
    }
    for (var i = 0; i < a.length; i++) patchNode(a[i], b[i]);
  }

  function patchNode(old, fresh) {
    var rows = fresh.nodeType === 1 && fresh.matches("tbody[data-rows]");
    var holdsRows = rows || (fresh.nodeType === 1 && fresh.querySelector("tbody[data-rows]"));
    var otherRows = rows && old.getAttribute("data-rows") !== fresh.getAttribute("data-rows");
    if (!holdsRows || old.nodeName !== fresh.nodeName || otherRows) {
      if (!old.isEqualNode(fresh)) old.replaceWith(fresh);
      return;
    }
    for (var i = old.attributes.length - 1; i >= 0; i--) {
      if (!fresh.hasAttribute(old.attributes[i].name)) old.removeAttribute(old.attributes[i].name);
    }
    for (var j = 0; j < fresh.attributes.length; j++) {
      var attribute = fresh.attributes[j];
      if (old.getAttribute(attribute.name) !== attribute.value) {
        old.setAttribute(attribute.name, attribute.value);
      }
    }
    if (rows) patchRows(old, fresh); else patchChildren(old, fresh);
  }

  function version(row) {
    return row.getAttribute("data-v") || row.outerHTML;
  }

  function patchRows(body, fresh) {
    // The rows shown that are shown no more go first, so the rest keep their places (a row
    // moved loses the text selected in it). A day's heading row can stand more than once.
    var wanted = new Map();
    for (var next = fresh.firstElementChild; next; next = next.nextElementSibling) {
      wanted.set(version(next), (wanted.get(version(next)) || 0) + 1);
    }
    var shown = new Map();
    Array.prototype.slice.call(body.children).forEach(function (row) {
      var v = version(row);
      if (!wanted.get(v)) return row.remove();
      wanted.set(v, wanted.get(v) - 1);
      if (shown.has(v)) shown.get(v).push(row); else shown.set(v, [row]);
    });
    var placed = null;
    for (next = fresh.firstElementChild; next; ) {
      var after = next.nextElementSibling;
      var kept = (shown.get(version(next)) || []).shift() || next;
      var here = placed ? placed.nextElementSibling : body.firstElementChild;
      if (here !== kept) body.insertBefore(kept, here);
      placed = kept;
      next = after;
    }
  }

  function show(html) {
    var fresh = document.createElement("template");
    fresh.innerHTML = html;
    patchChildren(live, fresh.content);
  }

  function receive(event) {
    var message = event.data;
    if (message.type === "live" && message.topic === topic) {
      show(message.html);
      root.setAttribute("data-event-id", message.id);
      window.deskUpdates = (window.deskUpdates || 0) + 1;
      tick();
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
  tick();
  setInterval(tick, 1000);
  follow();
})();
