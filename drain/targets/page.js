// The targets page's behaviour: filter and sort the rows the server rendered. It never
// builds markup from data: it only reorders rows and sets their hidden attribute. The
// filters and the sort live in the URL's fragment (#job=node&state=down&sort=age&desc=1),
// so a view can be bookmarked or shared.
(function () {
  "use strict";
  var form = document.getElementById("filters");
  var table = document.getElementById("targets");
  var shownEl = document.getElementById("shown");
  var controls = Array.prototype.slice.call(form.querySelectorAll("[data-filter]"));
  var rows = table ? Array.prototype.slice.call(table.tBodies[0].rows) : [];
  var heads = table ? Array.prototype.slice.call(table.tHead.rows[0].cells) : [];
  var sorted = { key: "", desc: false };
  var collator = new Intl.Collator(undefined, { numeric: true });

  function control(name) {
    for (var i = 0; i < controls.length; i++) {
      if (controls[i].dataset.filter === name) return controls[i];
    }
    return null;
  }

  function column(key) {
    for (var i = 0; i < heads.length; i++) {
      if (heads[i].dataset.key === key) return i;
    }
    return -1;
  }
  var instanceCol = column("instance");

  function filter() {
    var job = control("job").value, publisher = control("publisher").value;
    var state = control("state").value, instance = control("instance").value;
    var shown = 0;
    for (var i = 0; i < rows.length; i++) {
      var d = rows[i].dataset;
      var keep = (!job || d.job === job) && (!publisher || d.publisher === publisher) &&
        (!state || d.state === state) &&
        (!instance || rows[i].cells[instanceCol].textContent.indexOf(instance) >= 0);
      if (rows[i].hidden === keep) rows[i].hidden = !keep; // touch the DOM only on change
      if (keep) shown++;
    }
    shownEl.textContent = String(shown);
  }

  function sortBy(key, desc) {
    var col = column(key);
    if (col < 0) return;
    var numeric = heads[col].dataset.type === "num";
    var keyed = rows.map(function (r, i) {
      var c = r.cells[col], v = "";
      if (c) v = c.dataset.v !== undefined ? c.dataset.v : c.textContent;
      if (numeric) {
        v = v === "" ? -Infinity : Number(v);
        if (isNaN(v)) v = -Infinity;
      }
      return { row: r, v: v, i: i };
    });
    keyed.sort(function (a, b) {
      var c = numeric ? (a.v < b.v ? -1 : a.v > b.v ? 1 : 0) : collator.compare(a.v, b.v);
      return (desc ? -c : c) || a.i - b.i;
    });
    var body = table.tBodies[0], frag = document.createDocumentFragment();
    rows = keyed.map(function (k) { frag.appendChild(k.row); return k.row; });
    body.appendChild(frag);
    heads.forEach(function (h, i) {
      if (i === col) h.setAttribute("aria-sort", desc ? "descending" : "ascending");
      else h.removeAttribute("aria-sort");
    });
    sorted = { key: key, desc: desc };
  }

  function save() {
    var p = new URLSearchParams();
    controls.forEach(function (c) { if (c.value) p.set(c.dataset.filter, c.value); });
    if (sorted.key) p.set("sort", sorted.key);
    if (sorted.desc) p.set("desc", "1");
    var s = p.toString();
    history.replaceState(null, "", s ? "#" + s : location.pathname + location.search);
  }

  function load() {
    var p = new URLSearchParams(location.hash.slice(1));
    controls.forEach(function (c) {
      var v = p.get(c.dataset.filter) || "";
      if (v && c.tagName === "SELECT" && !Array.prototype.some.call(c.options, function (o) { return o.value === v; })) {
        var o = document.createElement("option");
        o.value = v;
        o.textContent = v + " (none)";
        c.appendChild(o);
      }
      c.value = v;
    });
    if (p.get("sort")) sortBy(p.get("sort"), p.get("desc") === "1");
    filter();
  }

  form.addEventListener("submit", function (e) { e.preventDefault(); });
  form.addEventListener("input", function () { filter(); save(); });
  form.addEventListener("change", function () { filter(); save(); });
  form.addEventListener("reset", function (e) {
    e.preventDefault();
    controls.forEach(function (c) { c.value = ""; });
    filter();
    save();
  });
  if (table) {
    table.tHead.addEventListener("click", function (e) {
      var th = e.target.closest("th");
      if (!th) return;
      var key = th.dataset.key;
      sortBy(key, sorted.key === key ? !sorted.desc : false);
      save();
    });
  }
  window.addEventListener("hashchange", load);
  load();
}());
