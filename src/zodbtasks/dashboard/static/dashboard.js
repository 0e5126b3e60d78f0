// Refresh the job counts from the JSON endpoint, without reloading the page.
(function () {
  'use strict';
  var body = document.body;
  var url = body.getAttribute('data-counts-url');
  var every = parseFloat(body.getAttribute('data-poll-seconds')) * 1000;
  var stamp = document.getElementById('refreshed');
  if (!url || !(every > 0)) { return; }
  function show(data) {
    var cells = document.querySelectorAll('[data-count]');
    for (var i = 0; i < cells.length; i++) {
      var status = cells[i].getAttribute('data-count');
      var n = status === '*' ? data.total : data.counts[status];
      if (n !== undefined && cells[i].textContent !== String(n)) {
        cells[i].textContent = String(n);
        cells[i].classList.add('changed');
      }
    }
    if (stamp) {
      stamp.textContent = 'counts at ' + new Date().toLocaleTimeString() +
        (data.paused ? ' (service paused)' : '');
      stamp.className = '';
    }
  }
  function refresh() {
    fetch(url, {credentials: 'same-origin', cache: 'no-store',
                headers: {'Accept': 'application/json'}})
      .then(function (r) {
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.json();
      })
      .then(show)
      .catch(function (e) {
        if (stamp) { stamp.textContent = 'counts not refreshed: ' + e.message;
                     stamp.className = 'stale'; }
      })
      .then(function () { window.setTimeout(refresh, every); });
  }
  window.setTimeout(refresh, every);
})();

// The job list: a box that selects every job of the page.
(function () {
  'use strict';
  var all = document.getElementById('select-all');
  if (!all) { return; }
  all.addEventListener('change', function () {
    var boxes = document.querySelectorAll('input.select');
    for (var i = 0; i < boxes.length; i++) { boxes[i].checked = all.checked; }
  });
})();
