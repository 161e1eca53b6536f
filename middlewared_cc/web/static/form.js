// The Add / Edit form of one cloud credential, in a modal dialog. Provider fields come from the schema.

import {describedBy, h, uid} from './dom.js';
import {buildField, DriveList} from './fields.js';
import {OAuthLogin, TokenHealthView} from './oauth.js';
import {RpcError} from './rpc.js';

const MAX_NAME = 200;
const REASONS = {
  invalid_auth: 'The provider refused these credentials.',
  cannot_connect: 'The provider cannot be reached.',
  not_found: 'The provider answered, but what these credentials point at was not found.',
  timeout: 'The provider did not answer in time.',
  discontinued: 'This provider is discontinued.',
  unsupported: 'This provider cannot be verified.',
};

export class CredentialForm {
  /** app: the page (call, providers, list, canWrite, keychain); entry: the credential to edit, or null. */
  constructor(app, entry, opener) {
    this.app = app;
    this.entry = entry;
    this.opener = opener;
    this.mode = !app.canWrite ? 'view' : entry ? 'edit' : 'add';
    this.fields = new Map();
    this.verifying = null;
    this.build();
  }

  get stored() {
    if (!this.entry) return null;
    const {type, ...attrs} = this.entry.provider;
    return attrs;
  }

  build() {
    const titleId = uid('form-title');
    const heading = {add: 'Add Cloud Credential', edit: 'Edit Cloud Credential', view: 'Cloud Credential'}[this.mode];
    this.alert = h('div', {class: 'alert', role: 'alert', tabindex: '-1', hidden: true});
    this.nameInput = h('input', {id: uid('name'), name: 'name', type: 'text', autocomplete: 'off', spellcheck: 'false',
      maxlength: String(MAX_NAME), required: this.mode !== 'view', 'aria-required': this.mode !== 'view' ? 'true' : null,
      readOnly: this.mode === 'view', value: this.entry ? this.entry.name : ''});
    this.nameError = h('p', {class: 'error', id: uid('err'), hidden: true});
    this.nameInput.addEventListener('input', () => this.checkName());
    this.providerSelect = h('select', {id: uid('provider'), name: 'provider', disabled: this.mode !== 'add',
      required: this.mode === 'add', 'aria-required': this.mode === 'add' ? 'true' : null});
    if (this.mode === 'add') this.providerSelect.append(h('option', {value: ''}, 'Choose a provider'));
    for (const provider of this.app.providers) {
      this.providerSelect.append(h('option', {value: provider.name}, provider.title));
    }
    if (this.entry) this.ensureProviderOption(this.entry.provider.type);
    this.providerError = h('p', {class: 'error', id: uid('err'), hidden: true});
    this.providerSelect.addEventListener('change', () => this.showProvider(this.providerSelect.value));
    this.providerFields = h('div', {class: 'provider-fields'});
    this.verifyArea = h('div', {class: 'verify', role: 'status', 'aria-live': 'polite'});
    const required = this.mode !== 'view' ? h('span', {class: 'req', 'aria-hidden': 'true', title: 'Required'}, '*') : null;

    this.saveButton = this.mode !== 'view' ? h('button', {type: 'submit', class: 'primary'}, 'Save') : null;
    this.verifyButton = this.mode !== 'view'
      ? h('button', {type: 'button', class: 'secondary', onclick: () => this.verify()}, 'Verify Credential') : null;
    this.deleteButton = this.mode === 'edit'
      ? h('button', {type: 'button', class: 'danger', onclick: () => this.confirmDelete()}, 'Delete') : null;
    const closeButton = h('button', {type: 'button', class: 'secondary', onclick: () => this.close()}, 'Close');

    this.form = h('form', {class: 'credential-form', novalidate: true},
      h('header', {class: 'dialog-head'}, h('h2', {id: titleId}, heading)),
      h('div', {class: 'dialog-body'},
        this.alert,
        this.mode === 'view' ? h('p', {class: 'note'}, 'You can view this credential; changing it needs the CLOUD_SYNC_WRITE role.') : null,
        h('div', {class: 'field', 'data-field': 'name'},
          h('div', {class: 'label-row'}, h('label', {for: this.nameInput.id}, 'Name'), required),
          this.nameInput, this.nameError),
        h('div', {class: 'field', 'data-field': 'provider'},
          h('div', {class: 'label-row'}, h('label', {for: this.providerSelect.id}, 'Provider'),
            this.mode === 'add' ? required.cloneNode(true) : null),
          this.providerSelect, this.providerError),
        this.providerFields),
      this.verifyArea,
      h('footer', {class: 'dialog-foot'},
        h('div', {class: 'left'}, this.verifyButton, this.deleteButton),
        h('div', {class: 'right'}, closeButton, this.saveButton)));
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (this.mode !== 'view') this.save();
    });
    this.dialog = h('dialog', {class: 'form-dialog', 'aria-labelledby': titleId}, this.form);
    this.dialog.addEventListener('close', () => this.closed());
    if (this.entry) {
      this.providerSelect.value = this.entry.provider.type;
      this.showProvider(this.entry.provider.type);
    }
  }

  ensureProviderOption(type) {
    if (!this.app.provider(type)) this.providerSelect.append(h('option', {value: type}, `${type} (unavailable)`));
  }

  open() {
    document.body.append(this.dialog);
    this.dialog.showModal();
    (this.mode === 'add' ? this.nameInput : this.firstControl() || this.nameInput).focus();
  }

  firstControl() {
    return this.mode === 'view' ? this.nameInput : [...this.fields.values()][0]?.focusTarget();
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }

  closed() {
    if (this.verifying) this.verifying.abort.abort();
    this.verifying = null;
    clearInterval(this.tick);
    this.dialog.remove();
    this.app.formClosed(this);
    if (this.opener && this.opener.isConnected) this.opener.focus();
    else if (!document.querySelector('dialog[open]')) this.app.focusHome();
  }

  showProvider(type) {
    this.fields = new Map();
    this.verifyArea.replaceChildren();
    const provider = this.app.provider(type);
    if (!provider) {
      this.providerFields.replaceChildren(type ? h('p', {class: 'note'}, 'This provider is not available in this daemon.') : []);
      return;
    }
    const ctx = {
      mode: this.mode,
      stored: this.entry && this.entry.provider.type === type ? this.stored : null,
      keychain: this.app.keychain,
      credentialName: () => this.nameInput.value.trim(),
      nameError: (message) => {
        this.setNameError(message);
        this.nameInput.focus();
      },
      call: (method, params) => this.app.call(method, params),
    };
    const main = h('div', {class: 'group-main'});
    const groups = new Map();
    let driveHint = null;
    let driveSlot = null;
    let oauthHint = null;
    let oauthSlot = null;
    for (const {property, schema} of provider.credentials_schema) {
      const field = buildField(property, schema, ctx);
      this.fields.set(property, field);
      let container = main;
      if (field.group) {
        if (!groups.has(field.group)) {
          const body = h('div', {class: 'group-body'});
          const details = h('details', {class: 'group'}, h('summary', {}, field.group), body);
          groups.set(field.group, {details, body, open: false});
        }
        const group = groups.get(field.group);
        container = group.body;
        if (this.mode !== 'add' && differsFromDefault(field, ctx.stored)) group.open = true;
      }
      if (schema['x-drive-listing'] && !driveHint) {
        driveHint = schema['x-drive-listing'];
        driveSlot = h('div');
        container.append(driveSlot);
      }
      if (schema['x-oauth'] && !oauthHint) {
        oauthHint = schema['x-oauth'];
        oauthSlot = h('div');
        container.append(oauthSlot);
      }
      container.append(field.el);
    }
    // A stored OAuth credential shows its token's health (no secret); editing, it offers Reconnect.
    const health = oauthHint && this.entry ? new TokenHealthView(this.app.health, this.entry.id) : null;
    if (oauthHint && this.mode !== 'view') {
      oauthSlot.replaceWith(new OAuthLogin(oauthHint, this.fields, ctx, {
        type, credentialId: this.mode === 'edit' ? this.entry.id : null, health,
        onReconnected: () => {
          this.alert.hidden = true;
          this.app.toast('Reconnected: the credential has a new token.');
        },
      }).el);
    } else if (health) oauthSlot.replaceWith(health.el);
    else if (oauthSlot) oauthSlot.remove();
    if (driveHint && this.mode !== 'view') driveSlot.replaceWith(new DriveList(driveHint, this.fields, ctx).el);
    else if (driveSlot) driveSlot.remove();
    for (const group of groups.values()) group.details.open = group.open;
    this.providerFields.replaceChildren(main, ...[...groups.values()].map((g) => g.details));
  }

  checkName() {
    const name = this.nameInput.value.trim();
    const taken = name && this.app.list.nameTaken(name, this.entry ? this.entry.id : null);
    this.setNameError(taken ? 'A credential with this name already exists.' : '');
    return !taken;
  }

  setNameError(message) {
    setError(this.nameInput, this.nameError, message);
  }

  clearErrors() {
    this.alert.hidden = true;
    this.alert.replaceChildren();
    this.setNameError('');
    setError(this.providerSelect, this.providerError, '');
    for (const field of this.fields.values()) field.setError('');
  }

  showAlert(...content) {
    this.alert.replaceChildren(...content);
    this.alert.hidden = false;
  }

  /** Read the provider fields: [attrs, errors as [field, message]]. */
  readFields() {
    const attrs = {};
    const errors = [];
    for (const [name, field] of this.fields) {
      const read = field.read();
      if (read.error) errors.push([field, read.error]);
      else if (read.include) attrs[name] = read.value;
    }
    return [attrs, errors];
  }

  /** Show field errors, open folded groups holding them, focus the first. */
  showErrors(errors) {
    let first = null;
    for (const [target, message] of errors) {
      if (target === 'name') this.setNameError(message);
      else if (target === 'provider') setError(this.providerSelect, this.providerError, message);
      else target.setError(message);
    }
    const order = [this.nameInput, this.providerSelect, ...[...this.fields.values()].map((f) => f.focusTarget())];
    first = order.find((el) => el.getAttribute('aria-invalid') === 'true');
    if (first) {
      const details = first.closest('details');
      if (details) details.open = true;
      first.focus();
    }
  }

  /** Put a -32602 error's attribute paths on their fields; what matches no field goes in the alert. */
  mapServerErrors(error) {
    const errors = [];
    const loose = [];
    for (const [path, message] of error.fieldErrors) {
      const parts = path.split('.');
      const field = [...parts].reverse().map((p) => this.fields.get(p)).find(Boolean);
      if (field) errors.push([field, message]);
      else if (parts.length === 2 && parts[1] === 'name') errors.push(['name', message]);
      else if (parts.includes('provider') || parts[parts.length - 1] === 'type') errors.push(['provider', message]);
      else loose.push(`${path}: ${message}`);
    }
    if (loose.length) this.showAlert(h('p', {}, 'The daemon refused this:'), h('ul', {}, loose.map((t) => h('li', {}, t))));
    if (errors.length) this.showErrors(errors);
    else if (!loose.length) this.showAlert(h('p', {}, error.message));
  }

  async save() {
    this.clearErrors();
    const name = this.nameInput.value.trim();
    const type = this.providerSelect.value;
    const errors = [];
    if (!name) errors.push(['name', 'Enter a name.']);
    else if (!this.checkName()) errors.push(['name', 'A credential with this name already exists.']);
    if (!type) errors.push(['provider', 'Choose a provider.']);
    const [attrs, fieldErrors] = this.readFields();
    errors.push(...fieldErrors);
    if (errors.length) {
      this.showErrors(errors);
      return;
    }
    const data = {name, provider: {type, ...attrs}};
    this.saveButton.disabled = true;
    this.form.setAttribute('aria-busy', 'true');
    try {
      const saved = this.mode === 'edit'
        ? await this.app.call('cloudsync.credentials.update', [this.entry.id, data])
        : await this.app.call('cloudsync.credentials.create', [data]);
      this.app.list.upsert(saved);
      this.app.toast(`Saved "${saved.name}".`);
      this.close();
    } catch (error) {
      if (error instanceof RpcError && error.code === -32602) this.mapServerErrors(error);
      else this.showAlert(h('p', {}, error.message));
    } finally {
      this.saveButton.disabled = false;
      this.form.removeAttribute('aria-busy');
    }
  }

  async verify() {
    this.clearErrors();
    const type = this.providerSelect.value;
    if (!type) {
      this.showErrors([['provider', 'Choose a provider.']]);
      return;
    }
    const [attrs, errors] = this.readFields();
    if (errors.length) {
      this.showErrors(errors);
      return;
    }
    // Editing: secrets left empty are the stored ones, which this caller may read but the form never shows.
    const stored = this.entry && this.entry.provider.type === type ? this.stored : {};
    const data = {type, ...stored, ...attrs};
    // On a connection of its own, so Cancel (or closing the form) ends the daemon's verify as well.
    const run = {abort: new AbortController()};
    this.verifying = run;
    const started = performance.now();
    const elapsed = h('span', {class: 'elapsed'}, '0 s');
    const cancel = h('button', {type: 'button', class: 'secondary', onclick: () => this.cancelVerify()}, 'Cancel');
    this.verifyArea.className = 'verify busy';
    this.verifyArea.replaceChildren(h('p', {}, h('span', {class: 'spinner', 'aria-hidden': 'true'}),
      'Verifying the credential… ', elapsed), cancel);
    this.verifyButton.disabled = true;
    clearInterval(this.tick);
    this.tick = setInterval(() => {
      elapsed.textContent = `${Math.round((performance.now() - started) / 1000)} s`;
    }, 1000);
    try {
      const result = await this.app.callAlone('cloudsync.credentials.verify', [data], run.abort.signal);
      if (this.verifying !== run) return;
      this.showVerifyResult(result, performance.now() - started);
    } catch (error) {
      if (this.verifying !== run) return;
      this.verifyArea.className = 'verify';
      this.verifyArea.replaceChildren();
      if (error instanceof RpcError && error.code === -32602) this.mapServerErrors(error);
      else this.verifyArea.replaceChildren(h('p', {class: 'bad'}, `Verify failed: ${error.message}`));
    } finally {
      if (this.verifying === run) {
        this.verifying = null;
        clearInterval(this.tick);
        this.verifyButton.disabled = false;
      }
    }
  }

  cancelVerify() {
    if (this.verifying) this.verifying.abort.abort();
    this.verifying = null;
    clearInterval(this.tick);
    this.verifyButton.disabled = false;
    this.verifyArea.className = 'verify';
    this.verifyArea.replaceChildren(h('p', {}, 'Verification cancelled.'));
    this.verifyButton.focus();
  }

  showVerifyResult(result, ms) {
    const took = `(${(ms / 1000).toFixed(1)} s)`;
    if (result && result.valid) {
      this.verifyArea.className = 'verify ok';
      this.verifyArea.replaceChildren(h('p', {}, h('strong', {}, 'The credential is valid.'), ` ${took}`));
      return;
    }
    const reason = REASONS[result && result.reason] || 'The credential could not be verified.';
    const excerpt = (result && (result.excerpt || result.error)) || '';
    this.verifyArea.className = 'verify bad';
    this.verifyArea.replaceChildren(
      h('p', {}, h('strong', {}, 'The credential is not valid. '), reason, ` ${took}`),
      excerpt ? h('p', {class: 'excerpt mono'}, excerpt) : null,
      result && result.error ? h('details', {class: 'full-error'}, h('summary', {}, 'Full error'),
        h('pre', {class: 'mono'}, result.error)) : null);
  }

  confirmDelete() {
    this.app.confirmDelete(this.entry, this.deleteButton, () => this.close());
  }

  /** The list saw this credential change or go elsewhere (another browser, the CLI). */
  externalChange(kind, entry) {
    if (kind === 'removed') {
      this.showAlert(h('p', {}, 'This credential was deleted elsewhere.'));
      if (this.saveButton) this.saveButton.disabled = true;
      if (this.deleteButton) this.deleteButton.disabled = true;
    } else if (entry) {
      this.entry = entry;
      if (this.mode !== 'add') {
        this.showAlert(h('p', {}, 'This credential was changed elsewhere. Saving replaces that change with this form.'));
      }
    }
  }
}

function setError(input, errorEl, message) {
  errorEl.textContent = message;
  errorEl.hidden = !message;
  if (message) input.setAttribute('aria-invalid', 'true');
  else input.removeAttribute('aria-invalid');
  describedBy(input, errorEl.id, Boolean(message));
}

function differsFromDefault(field, stored) {
  if (!stored || !(field.name in stored)) return false;
  const value = stored[field.name];
  if (field.secret) return field.ctx.mode === 'edit' && value !== '' && value !== null;
  return value !== (field.schema.default ?? null) && value !== '';
}
