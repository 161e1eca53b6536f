// The list of cloud credentials: sortable Name and Provider columns, a filter, a count, live updates.
// A change made elsewhere touches its own row only (found, moved or inserted by binary search in the sorted
// rows), so a list of thousands stays quick to update; the whole list is built only at load and when the
// sort or the filter changes.

import {h, plural} from './dom.js';

export class CredentialList {
  /** app: providerTitle(type), openForm(entry, opener), canWrite. */
  constructor(app) {
    this.app = app;
    this.entries = new Map();
    this.sortKey = 'name';
    this.ascending = true;
    this.filterText = '';
    this.ready = false;
    this.shown = []; // the rows on screen, in sort order: {entry, name, provider, tr, button, ...}
    this.rows = new Map(); // id -> its row in shown
    this.dirty = new Set(); // ids whose rows wait for the next flush
    this.frameBusy = false; // a change was drawn this frame: more wait for requestAnimationFrame
    this.collator = new Intl.Collator(undefined, {sensitivity: 'base', numeric: true});
    this.build();
  }

  build() {
    this.filter = h('input', {id: 'credential-filter', type: 'search', autocomplete: 'off', spellcheck: 'false',
      placeholder: 'Name or provider'});
    this.filter.addEventListener('input', () => {
      this.filterText = this.filter.value.trim().toLowerCase();
      this.render();
    });
    this.count = h('p', {class: 'count', id: 'credential-count', 'aria-live': 'polite'});
    this.headers = {
      name: this.header('name', 'Name'),
      provider: this.header('provider', 'Provider'),
    };
    this.body = h('tbody');
    this.table = h('table', {class: 'credentials', 'aria-describedby': 'credential-count'},
      h('caption', {class: 'vh'}, 'Cloud credentials'),
      h('thead', {}, h('tr', {}, this.headers.name.th, this.headers.provider.th,
        this.app.canWrite ? h('th', {scope: 'col', class: 'actions'}, h('span', {class: 'vh'}, 'Actions')) : null)),
      this.body);
    this.empty = h('div', {class: 'empty', hidden: true});
    this.el = h('section', {class: 'list', 'aria-labelledby': 'page-title'},
      h('div', {class: 'toolbar'},
        h('div', {class: 'filter'}, h('label', {for: this.filter.id}, 'Filter'), this.filter),
        this.count),
      h('div', {class: 'table-wrap'}, this.table),
      this.empty);
    this.body.addEventListener('click', (event) => {
      const button = event.target.closest('button[data-id]');
      if (button) this.app.openForm(this.entries.get(Number(button.dataset.id)), button);
      const remove = event.target.closest('button[data-delete]');
      if (remove) this.app.confirmDelete(this.entries.get(Number(remove.dataset.delete)), remove);
    });
  }

  header(key, text) {
    const indicator = h('span', {class: 'sort-indicator', 'aria-hidden': 'true'});
    const button = h('button', {type: 'button', class: 'sort'}, text, indicator);
    button.addEventListener('click', () => {
      this.ascending = this.sortKey === key ? !this.ascending : true;
      this.sortKey = key;
      this.render();
    });
    return {th: h('th', {scope: 'col'}, button), indicator};
  }

  nameTaken(name, exceptId) {
    for (const entry of this.entries.values()) if (entry.name === name && entry.id !== exceptId) return true;
    return false;
  }

  setAll(entries) {
    this.entries = new Map(entries.map((entry) => [entry.id, entry]));
    this.ready = true;
    this.render();
  }

  /** A credential created or changed (by this page or elsewhere): only its row is touched. */
  upsert(entry) {
    if (!entry || typeof entry.id !== 'number') return;
    this.entries.set(entry.id, entry);
    this.changed(entry.id);
  }

  remove(id) {
    if (this.entries.delete(id)) this.changed(id);
  }

  /** A collection_update notification: added / changed carry the whole entry, removed only its id. */
  apply(params) {
    if (params.msg === 'removed') this.remove(params.id);
    else if (params.fields) this.upsert({...params.fields, id: params.id});
  }

  providerType(entry) {
    return entry.provider && typeof entry.provider === 'object' ? entry.provider.type : entry.provider;
  }

  /**
   * Row ``id`` is out of date. The first change of a frame is drawn at once (a lone change shows in the
   * frame that follows it); later ones in the same frame wait for that frame and are drawn together, so a
   * burst of events costs one pass per frame, not one per event. The entries themselves are always current
   * (nameTaken, the form).
   */
  changed(id) {
    if (!this.ready) return;
    this.dirty.add(id);
    if (this.frameBusy) return;
    this.frameBusy = true;
    this.flush();
    requestAnimationFrame(() => {
      this.frameBusy = false;
      if (this.dirty.size) this.flush();
    });
  }

  flush() {
    const ids = this.dirty;
    this.dirty = new Set();
    // Past a few dozen rows at once, building the list afresh is as quick as moving them one by one.
    if (ids.size > Math.max(32, this.shown.length / 8)) {
      this.render();
      return;
    }
    for (const id of ids) this.refresh(id);
    this.showCount();
  }

  /** Bring one row in line with its entry: add, update in place, move or drop it. */
  refresh(id) {
    const old = this.rows.get(id);
    const entry = this.entries.get(id);
    const record = entry ? this.record(entry) : null;
    const visible = record !== null && this.matches(record);
    if (old && visible && old.name === record.name && old.provider === record.provider) {
      this.updateRow(old, record);
      return;
    }
    if (old && visible) {
      // A new sort key: the row stays where it is if that is still its place between its neighbours.
      const at = this.indexOf(old);
      const before = this.shown[at - 1];
      const after = this.shown[at + 1];
      this.updateRow(old, record);
      if ((!before || this.compare(before, old) < 0) && (!after || this.compare(old, after) < 0)) return;
      this.shown.splice(at, 1);
      this.place(old, true);
      return;
    }
    if (old) {
      this.shown.splice(this.indexOf(old), 1);
      this.rows.delete(id);
      old.tr.remove();
      return;
    }
    if (visible) {
      this.buildRow(record);
      this.place(record, false);
    }
  }

  /** Where ``row`` is in the sorted list (binary search on the sort order; rows are unique by id). */
  indexOf(row) {
    const at = this.insertionPoint(row);
    return this.shown[at] === row ? at : this.shown.indexOf(row);
  }

  /** The first index whose row sorts at or after ``row``. */
  insertionPoint(row) {
    let lo = 0;
    let hi = this.shown.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.compare(this.shown[mid], row) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Insert ``row`` (not in ``shown``) at its sorted place, in the array and in the table. */
  place(row, moving) {
    const at = this.insertionPoint(row);
    const next = this.shown[at];
    this.shown.splice(at, 0, row);
    const ref = next ? next.tr : null;
    // moveBefore keeps focus and state on a row that moves; insertBefore would blur a focused button.
    if (moving && this.body.moveBefore && row.tr.isConnected) this.body.moveBefore(row.tr, ref);
    else this.body.insertBefore(row.tr, ref);
  }

  record(entry) {
    return {entry, name: String(entry.name), provider: this.app.providerTitle(this.providerType(entry))};
  }

  matches(row) {
    const needle = this.filterText;
    return !needle || row.name.toLowerCase().includes(needle) || row.provider.toLowerCase().includes(needle);
  }

  compare(a, b) {
    const key = this.sortKey;
    const other = key === 'name' ? 'provider' : 'name';
    const sign = this.ascending ? 1 : -1;
    return sign * (this.collator.compare(a[key], b[key]) || this.collator.compare(a[other], b[other])
      || a.entry.id - b.entry.id);
  }

  /** The row's elements for ``row`` (a record), kept on it and in ``rows`` by id. */
  buildRow(row) {
    const {entry, name, provider} = row;
    row.button = h('button', {type: 'button', class: 'link', 'data-id': String(entry.id)}, name);
    row.badge = this.badge(entry);
    row.providerCell = h('td', {}, provider);
    row.deleteName = this.app.canWrite ? h('span', {class: 'vh'}, ` ${name}`) : null;
    row.tr = h('tr', {},
      h('td', {}, row.button, row.badge),
      row.providerCell,
      this.app.canWrite ? h('td', {class: 'actions'}, h('button', {type: 'button', class: 'secondary small',
        'data-delete': String(entry.id)}, 'Delete', row.deleteName)) : null);
    this.rows.set(entry.id, row);
    return row;
  }

  badge(entry) {
    if (entry.undecryptable) return h('span', {class: 'badge', title: entry.undecryptable}, 'cannot decrypt');
    const health = this.app.health ? this.app.health.get(entry.id) : null;
    return health && health.needs_reconnect
      ? h('span', {class: 'badge warn', title: 'Its OAuth token can no longer be refreshed: edit it and Reconnect.'},
        'Needs reconnect') : null;
  }

  /** The token health of credential ``id`` changed (oauth.js): its row's marker follows. */
  healthChanged(id) {
    const row = this.rows.get(id);
    if (!row) return;
    if (row.badge) row.badge.remove();
    row.badge = this.badge(row.entry);
    if (row.badge) row.button.after(row.badge);
  }

  /** Give the row built for ``row`` the texts of ``fresh`` (same id); ``row`` takes its keys. */
  updateRow(row, fresh) {
    if (row.name !== fresh.name) {
      row.button.textContent = fresh.name;
      if (row.deleteName) row.deleteName.textContent = ` ${fresh.name}`;
    }
    if (row.provider !== fresh.provider) row.providerCell.textContent = fresh.provider;
    if ((row.entry.undecryptable || null) !== (fresh.entry.undecryptable || null)) {
      if (row.badge) row.badge.remove();
      row.badge = this.badge(fresh.entry);
      if (row.badge) row.button.after(row.badge);
    }
    row.entry = fresh.entry;
    row.name = fresh.name;
    row.provider = fresh.provider;
  }

  /** The whole list afresh: at first load, and when the sort or the filter changes. */
  render() {
    this.dirty = new Set();
    this.rows = new Map();
    this.shown = [...this.entries.values()].map((entry) => this.record(entry)).filter((row) => this.matches(row));
    this.shown.sort((a, b) => this.compare(a, b));
    this.body.replaceChildren(...this.shown.map((row) => this.buildRow(row).tr));
    for (const [name, {th, indicator}] of Object.entries(this.headers)) {
      const active = name === this.sortKey;
      th.setAttribute('aria-sort', active ? (this.ascending ? 'ascending' : 'descending') : 'none');
      indicator.textContent = active ? (this.ascending ? '▲' : '▼') : '';
    }
    this.showCount();
  }

  /** The count, and the empty state when nothing is shown. */
  showCount() {
    const shown = this.shown.length;
    const total = this.entries.size;
    const text = this.filterText ? `${shown} of ${plural(total, 'credential')}` : plural(total, 'credential');
    if (this.count.textContent !== text) this.count.textContent = text;
    this.table.hidden = shown === 0;
    this.empty.hidden = shown !== 0 || !this.ready;
    if (!shown) {
      this.empty.replaceChildren(total === 0
        ? h('p', {}, this.app.canWrite
          ? 'No cloud credentials yet. Choose Add to store the first one.'
          : 'No cloud credentials yet. Someone with the CLOUD_SYNC_WRITE role can add them.')
        : h('p', {}, `No credential matches "${this.filter.value.trim()}".`));
    }
  }
}
