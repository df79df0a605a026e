// edgewatch live updates: every few seconds, fetch this page's <main> (header X-Partial: 1)
// and swap it in; show the #stale banner when an update fails, when none succeeded for a
// while, or when the server says its own data is stale. Served from the binary; no library.
(function () {
  "use strict";
  var body = document.body;
  var banner = document.getElementById("stale");
  if (!banner || !window.fetch) {
    return; // The page reloads itself through <noscript> only; say nothing, break nothing.
  }
  var every = Number(body.getAttribute("data-refresh-ms")) || 5000;
  var staleAfter = Number(body.getAttribute("data-stale-after-ms")) || 15000;
  var lastOk = Date.now();
  var failure = null;
  var busy = false;

  function main() {
    return document.getElementById("main");
  }

  // Someone typing into a form inside <main> (an acknowledgement, say) must not lose it.
  function editing() {
    var a = document.activeElement;
    var m = main();
    return !!(a && m && m.contains(a) && /^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName));
  }

  function render() {
    var m = main();
    var secs = Math.round((Date.now() - lastOk) / 1000);
    var late = Date.now() - lastOk > staleAfter;
    var serverReason = m && m.getAttribute("data-stale") === "true"
      ? m.getAttribute("data-stale-reason") : null;
    var text = null;
    if (failure !== null || late) {
      text = "Data is stale — last update " + secs + " s ago" +
        (failure !== null ? " (" + failure + ")" : "");
    } else if (serverReason) {
      text = "Data is stale — " + serverReason;
    }
    body.classList.toggle("stale", text !== null);
    banner.hidden = text === null;
    if (text !== null && banner.textContent !== text) {
      banner.textContent = text;
    }
  }

  function poll() {
    if (busy) {
      return;
    }
    busy = true;
    var ctl = window.AbortController ? new AbortController() : null;
    var timer = setTimeout(function () {
      if (ctl) {
        ctl.abort();
      }
    }, Math.max(every - 500, 2000));
    fetch(location.href, {
      headers: { "X-Partial": "1" },
      cache: "no-store",
      signal: ctl ? ctl.signal : undefined
    }).then(function (r) {
      if (!r.ok) {
        throw new Error("the gateway answered " + r.status);
      }
      return r.text();
    }).then(function (html) {
      var t = document.createElement("template");
      t.innerHTML = html.trim();
      var fresh = t.content.firstElementChild;
      if (!fresh || fresh.id !== "main") {
        throw new Error("unexpected answer");
      }
      if (!editing()) {
        // Keep open what the reader opened (the rollup tables are <details>).
        var open = main().querySelectorAll("details");
        var next = fresh.querySelectorAll("details");
        for (var i = 0; i < open.length && i < next.length; i++) {
          next[i].open = open[i].open;
        }
        main().replaceWith(fresh);
      }
      lastOk = Date.now();
      failure = null;
    }).catch(function (e) {
      failure = e && e.name === "AbortError" ? "no answer"
        : e && /answered|unexpected/.test(e.message) ? e.message : "gateway unreachable";
    }).then(function () {
      clearTimeout(timer);
      busy = false;
      render();
    });
  }

  body.classList.add("js");
  setInterval(poll, every);
  setInterval(render, 1000);
  render();
})();
