// mailbus console: live tables (server-sent events), the connection form's sections and an
// in-place connection check. Every page works without this file, minus the live updates.
(function () {
  'use strict';

  // mailbus demo prints /ui/login#token=...: the fragment never reaches the server or its
  // logs; it fills the form, leaves the address bar and logs in.
  var login = document.getElementById('login');
  if (login && location.hash.indexOf('#token=') === 0) {
    var token = decodeURIComponent(location.hash.slice(7));
    history.replaceState(null, '', location.pathname);
    document.getElementById('token').value = token;
    login.submit();
  }

  var form = document.getElementById('connection-form');
  if (form) {
    var sync = function () {
      var checked = form.querySelector('input[name=type]:checked');
      var type = checked ? checked.value : 'imap';
      var auth = form.elements.auth.value;
      form.querySelectorAll('[data-show-type]').forEach(function (el) {
        el.hidden = el.getAttribute('data-show-type') !== type;
      });
      form.querySelectorAll('[data-show-auth]').forEach(function (el) {
        el.hidden = el.getAttribute('data-show-auth') !== auth;
      });
    };
    form.addEventListener('change', sync);
    sync();

    // Check connection without leaving the page, so typed secrets stay in the form.
    var check = document.getElementById('check');
    var out = document.getElementById('check-result');
    check.addEventListener('click', function (e) {
      e.preventDefault();
      check.disabled = true;
      out.setAttribute('aria-busy', 'true');
      out.innerHTML = '<p class="muted" id="check-running">…</p>';
      fetch(check.formAction, {
        method: 'POST',
        body: new URLSearchParams(new FormData(form)),
        headers: { 'X-Console-Fragment': 'check' },
        credentials: 'same-origin'
      }).then(function (r) {
        return r.text().then(function (t) {
          if (!r.ok) {
            var p = document.createElement('p');
            p.className = 'error';
            p.textContent = r.status + ' ' + r.statusText;
            out.replaceChildren(p);
            return;
          }
          out.innerHTML = t;
        });
      }).catch(function (err) {
        out.textContent = String(err);
      }).finally(function () {
        check.disabled = false;
        out.removeAttribute('aria-busy');
      });
    });
  }

  // Keyed update: unchanged rows stay the same nodes, so focus and selection survive.
  function replaceRows(tbody, html) {
    var t = document.createElement('tbody');
    t.innerHTML = html;
    var old = {};
    Array.prototype.forEach.call(tbody.children, function (r) { if (r.id) old[r.id] = r; });
    var keep = new Set();
    Array.prototype.slice.call(t.children).forEach(function (nr, i) {
      var or = nr.id && old[nr.id];
      var want = or && or.innerHTML === nr.innerHTML ? or : nr;
      var at = tbody.children[i];
      if (at !== want) tbody.insertBefore(want, at || null);
      keep.add(want);
    });
    Array.prototype.slice.call(tbody.children).forEach(function (r) {
      if (!keep.has(r)) r.remove();
    });
  }

  var live = document.body.getAttribute('data-live');
  if (live && window.EventSource) {
    var dot = document.getElementById('live-state');
    var es = new EventSource(live);
    es.onopen = function () { if (dot) dot.classList.add('on'); };
    es.onerror = function () { if (dot) dot.classList.remove('on'); };
    es.addEventListener('rows', function (e) {
      var tbody = document.getElementById('live-rows');
      if (tbody) replaceRows(tbody, e.data);
      document.body.setAttribute('data-live-updates', String(+(document.body.getAttribute('data-live-updates') || 0) + 1));
    });
    es.addEventListener('event', function (e) {
      var tbody = document.getElementById('live-events');
      if (!tbody) return;
      var empty = tbody.querySelector('tr.empty');
      if (empty) empty.remove();
      tbody.insertAdjacentHTML('afterbegin', e.data);
      while (tbody.children.length > 200) tbody.lastElementChild.remove();
    });
  }
})();
