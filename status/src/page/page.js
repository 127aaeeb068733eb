// vpcrouter's status page (status/src/page.rs): keeps <main id="main"> current without a
// reload. Every 1.5 s it fetches the page's own URL as HTML (the same renderer made the first
// render), and swaps the content of <main> when it changed, keeping the scroll positions. A
// page that takes long to fetch and apply (a spec of thousands of CIDRs) is polled less often:
// at least four times the time the last update took, so the browser stays mostly idle.
// On errors it retries later and later (up to 30 s) and says so; it pauses while the tab is
// hidden. Nothing inline, nothing from elsewhere: it runs under the page's CSP.
(function () {
  'use strict';
  var PERIOD = 1500;
  var MAX_DELAY = 30000;
  var TIMEOUT = 10000;
  var main = document.getElementById('main');
  var live = document.getElementById('live');
  if (!main || !live || !window.fetch || !window.DOMParser) {
    return;
  }
  var url = window.location.href.split('#')[0];
  var delay = PERIOD;
  var timer = null;
  var busy = false;

  function two(n) {
    return (n < 10 ? '0' : '') + n;
  }
  function clock(d) {
    return two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds());
  }
  function say(text, stale) {
    live.textContent = text;
    live.classList.toggle('stale', stale);
  }
  function schedule(ms) {
    clearTimeout(timer);
    timer = document.hidden ? null : setTimeout(poll, ms);
  }

  // Replaces main's content with the fresh one, if different; scroll positions kept.
  function apply(html) {
    var doc = new DOMParser().parseFromString(html, 'text/html');
    var fresh = doc.getElementById('main');
    if (!fresh) {
      throw new Error('the answer has no main content');
    }
    if (doc.title && doc.title !== document.title) {
      document.title = doc.title;
    }
    if (fresh.innerHTML === main.innerHTML) {
      return;
    }
    var x = window.scrollX;
    var y = window.scrollY;
    var boxes = {};
    main.querySelectorAll('.scroll[id]').forEach(function (b) {
      boxes[b.id] = [b.scrollLeft, b.scrollTop];
    });
    main.replaceChildren.apply(main, Array.prototype.map.call(fresh.childNodes, function (n) {
      return document.importNode(n, true);
    }));
    Object.keys(boxes).forEach(function (id) {
      var b = document.getElementById(id);
      if (b) {
        b.scrollLeft = boxes[id][0];
        b.scrollTop = boxes[id][1];
      }
    });
    window.scrollTo(x, y);
  }

  function poll() {
    if (busy) {
      return;
    }
    busy = true;
    var started = Date.now();
    var ctrl = window.AbortController ? new AbortController() : null;
    var giveUp = setTimeout(function () {
      if (ctrl) {
        ctrl.abort();
      }
    }, TIMEOUT);
    fetch(url, {
      headers: { Accept: 'text/html' },
      cache: 'no-store',
      credentials: 'same-origin',
      signal: ctrl ? ctrl.signal : undefined
    }).then(function (r) {
      if (!r.ok) {
        throw new Error('HTTP ' + r.status);
      }
      return r.text();
    }).then(function (html) {
      apply(html);
      delay = Math.min(Math.max(PERIOD, 4 * (Date.now() - started)), MAX_DELAY);
      say('live · updated ' + clock(new Date()), false);
    }).catch(function () {
      delay = Math.min(delay * 2, MAX_DELAY);
      say('connection lost, retrying in ' + Math.round(delay / 1000) + ' s', true);
    }).then(function () {
      clearTimeout(giveUp);
      busy = false;
      schedule(delay);
    });
  }

  document.addEventListener('visibilitychange', function () {
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
    } else if (!busy) {
      schedule(0);
    }
  });
  say('live · updated ' + clock(new Date()), false);
  schedule(PERIOD);
})();
