// The list of cloud credentials: sortable Name and Provider columns, a filter, a count, live updates.

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

  upsert(entry) {
    if (!entry || typeof entry.id !== 'number') return;
    this.entries.set(entry.id, entry);
    this.render();
  }

  remove(id) {
    if (this.entries.delete(id)) this.render();
  }

  /** A collection_update notification: added / changed carry the whole entry, removed only its id. */
  apply(params) {
    if (params.msg === 'removed') this.remove(params.id);
    else if (params.fields) this.upsert({...params.fields, id: params.id});
  }

  providerType(entry) {
    return entry.provider && typeof entry.provider === 'object' ? entry.provider.type : entry.provider;
  }

  render() {
    const titled = [...this.entries.values()].map((entry) => ({
      entry, name: String(entry.name), provider: this.app.providerTitle(this.providerType(entry)),
    }));
    const needle = this.filterText;
    const shown = needle
      ? titled.filter((row) => row.name.toLowerCase().includes(needle) || row.provider.toLowerCase().includes(needle))
      : titled;
    const key = this.sortKey;
    const other = key === 'name' ? 'provider' : 'name';
    const sign = this.ascending ? 1 : -1;
    shown.sort((a, b) => sign * (this.collator.compare(a[key], b[key]) || this.collator.compare(a[other], b[other])
      || a.entry.id - b.entry.id));
    const rows = shown.map(({entry, name, provider}) => h('tr', {},
      h('td', {}, h('button', {type: 'button', class: 'link', 'data-id': String(entry.id)}, name),
        entry.undecryptable ? h('span', {class: 'badge', title: entry.undecryptable}, 'cannot decrypt') : null),
      h('td', {}, provider),
      this.app.canWrite ? h('td', {class: 'actions'}, h('button', {type: 'button', class: 'secondary small',
        'data-delete': String(entry.id)}, 'Delete', h('span', {class: 'vh'}, ` ${name}`))) : null));
    this.body.replaceChildren(...rows);
    for (const [name, {th, indicator}] of Object.entries(this.headers)) {
      const active = name === key;
      th.setAttribute('aria-sort', active ? (this.ascending ? 'ascending' : 'descending') : 'none');
      indicator.textContent = active ? (this.ascending ? '▲' : '▼') : '';
    }
    const total = this.entries.size;
    this.count.textContent = needle ? `${shown.length} of ${plural(total, 'credential')}` : plural(total, 'credential');
    this.table.hidden = shown.length === 0;
    this.empty.hidden = shown.length !== 0 || !this.ready;
    if (!shown.length) {
      this.empty.replaceChildren(total === 0
        ? h('p', {}, this.app.canWrite
          ? 'No cloud credentials yet. Choose Add to store the first one.'
          : 'No cloud credentials yet. Someone with the CLOUD_SYNC_WRITE role can add them.')
        : h('p', {}, `No credential matches "${this.filter.value.trim()}".`));
    }
  }
}
