// One form control per provider attribute, built from its JSON Schema (cloudsync.providers) alone.
// Nothing here knows a provider: special widgets follow the schema's x- keywords (see providers/schema.py).

import {describedBy, h, hiddenText, humanize, uid} from './dom.js';

export const REDACTED = '********';
const LONG_FILE_BYTES = 64 * 1024;

/** A control for attribute ``name``. ctx: {mode: 'add'|'edit'|'view', stored: attrs or null, keychain}. */
export function buildField(name, schema, ctx) {
  const widget = schema['x-widget'];
  if (widget === 'keychain') return new KeychainField(name, schema, ctx);
  if (widget === 'json-file') return new JsonFileField(name, schema, ctx);
  if (Array.isArray(schema.enum)) return new ChoiceField(name, schema, ctx);
  const type = baseType(schema);
  if (type === 'boolean') return new BoolField(name, schema, ctx);
  if (type === 'integer') return new IntField(name, schema, ctx);
  if (widget === 'token') return new TokenField(name, schema, ctx);
  return new TextField(name, schema, ctx);
}

function baseType(schema) {
  const types = Array.isArray(schema.type) ? schema.type : [schema.type];
  return types.find((t) => t !== 'null');
}

function nullable(schema) {
  return Array.isArray(schema.type) && schema.type.includes('null');
}

/** The parts every control shares: label, required mark, help, error, read of a payload value. */
class Field {
  constructor(name, schema, ctx) {
    this.name = name;
    this.schema = schema;
    this.ctx = ctx;
    this.title = schema.title || name;
    this.secret = schema.writeOnly === true;
    this.required = schema._required_ === true;
    this.readOnly = ctx.mode === 'view';
    this.group = schema['x-group'] || '';
    this.id = uid(`f-${name}`);
    this.helpId = uid('help');
    this.errorId = uid('err');
    this.listeners = [];
    this.stored = ctx.stored && name in ctx.stored ? ctx.stored[name] : undefined;
  }

  /** Secret inputs start empty when editing: empty keeps the stored value. */
  get keepsStored() {
    return this.secret && this.ctx.mode === 'edit';
  }

  get mustFill() {
    return this.required && !this.keepsStored && !this.readOnly;
  }

  frame(control, {labelFor = true, extra = null} = {}) {
    const label = labelFor
      ? h('label', {for: this.id, id: `${this.id}-label`}, this.title)
      : h('span', {class: 'label', id: `${this.id}-label`}, this.title);
    const mark = this.mustFill ? h('span', {class: 'req', 'aria-hidden': 'true', title: 'Required'}, '*') : null;
    this.errorEl = h('p', {class: 'error', id: this.errorId, hidden: true});
    const help = this.schema.description ? h('p', {class: 'help', id: this.helpId}, this.schema.description) : null;
    this.el = h('div', {class: 'field', 'data-field': this.name},
      h('div', {class: 'label-row'}, label, mark), control, extra, this.errorEl, help);
    return this.el;
  }

  /** Link help text to the control and mark it required for assistive technology. */
  describe(input) {
    if (this.schema.description) describedBy(input, this.helpId, true);
    if (this.mustFill) input.setAttribute('aria-required', 'true');
  }

  setError(message) {
    this.errorEl.textContent = message;
    this.errorEl.hidden = !message;
    const target = this.focusTarget();
    if (message) target.setAttribute('aria-invalid', 'true');
    else target.removeAttribute('aria-invalid');
    describedBy(target, this.errorId, Boolean(message));
    this.el.classList.toggle('invalid', Boolean(message));
  }

  focusTarget() {
    return this.input;
  }

  focus() {
    this.focusTarget().focus();
  }

  onChange(listener) {
    this.listeners.push(listener);
  }

  changed() {
    for (const listener of this.listeners) listener(this);
  }

  /** The value to send: {include: false} to leave it out, {include: true, value}, or {error}. */
  read() {
    const raw = this.rawValue();
    if (raw === '' || raw === null) {
      if (this.keepsStored) return {include: false};
      if (this.mustFill) {
        // A required string without a minimum length may be empty (an FTP password); a URL may not.
        const mayBeEmpty = raw === '' && baseType(this.schema) === 'string' && !this.schema.minLength
          && this.schema.format !== 'uri';
        return mayBeEmpty ? {include: true, value: ''} : {error: 'This field is required.'};
      }
      if (this.ctx.mode === 'edit') return {include: true, value: 'default' in this.schema ? this.schema.default : null};
      return {include: false};
    }
    return this.parse(raw);
  }

  /** Whether the control differs from what it started with (opens folded groups holding it). */
  isSet() {
    const raw = this.rawValue();
    return raw !== '' && raw !== null && raw !== this.initial;
  }

  parse(raw) {
    return {include: true, value: raw};
  }
}

class TextField extends Field {
  constructor(name, schema, ctx) {
    super(name, schema, ctx);
    const shown = this.initialText();
    this.initial = shown;
    this.input = h('input', {
      id: this.id, name, type: this.secret && !this.readOnly ? 'password' : 'text', value: shown,
      autocomplete: this.secret ? 'new-password' : 'off', spellcheck: 'false',
      maxlength: schema.maxLength, readOnly: this.readOnly, required: this.mustFill,
      placeholder: this.keepsStored ? 'unchanged' : null,
      inputmode: schema.format === 'uri' ? 'url' : null,
    });
    this.input.addEventListener('input', () => this.changed());
    this.describe(this.input);
    this.frame(this.secret && !this.readOnly ? revealable(this.input, this.title) : this.input);
  }

  initialText() {
    if (this.keepsStored) return '';
    if (this.stored !== undefined && this.stored !== null) return String(this.stored);
    if (this.ctx.mode === 'add' && typeof this.schema.default === 'string') return this.schema.default;
    return '';
  }

  rawValue() {
    return this.input.value;
  }

  fill(value) {
    this.input.value = value === null || value === undefined ? '' : String(value);
    this.changed();
  }
}

/** An OAuth token: takes the token JSON or the whole `rclone authorize` output, and says when it is neither. */
class TokenField extends TextField {
  constructor(name, schema, ctx) {
    super(name, schema, ctx);
    if (this.readOnly) return;
    this.input.addEventListener('change', () => this.normalize());
    this.input.addEventListener('paste', () => setTimeout(() => this.normalize(), 0));
  }

  normalize() {
    const raw = this.input.value;
    if (!raw.trim()) {
      this.setError('');
      return;
    }
    const found = extractToken(raw);
    if (found.error) {
      this.setError(found.error);
      return;
    }
    this.setError('');
    if (found.value !== raw) {
      this.input.value = found.value;
      this.changed();
    }
  }

  parse(raw) {
    const found = extractToken(raw);
    return found.error ? {error: found.error} : {include: true, value: found.value};
  }

  /** The token in the input when it is one, else null (the drive listing waits for one). */
  token() {
    const raw = this.input.value;
    if (!raw.trim()) return null;
    const found = extractToken(raw);
    return found.error ? null : found.value;
  }
}

const NOT_A_TOKEN = 'This is not a token. Paste the JSON that "rclone authorize" prints (the text between '
  + '"--->" and "<---End paste", or all of it): an object with an access_token.';

/** The token JSON in ``text``: itself, or inside `rclone authorize` output, or base64 of either. */
export function extractToken(text) {
  let body = text.trim();
  const start = body.indexOf('--->');
  if (start >= 0) body = body.slice(start + 4);
  const end = body.indexOf('<---End paste');
  if (end >= 0) body = body.slice(0, end);
  body = body.trim();
  let parsed = parseObject(body);
  if (parsed === null && /^[A-Za-z0-9+/=_-]+$/.test(body)) {
    try {
      parsed = parseObject(atob(body.replace(/-/g, '+').replace(/_/g, '/')));
    } catch {
      parsed = null;
    }
  }
  if (parsed === null) return {error: NOT_A_TOKEN};
  const access = parsed.access_token ?? parsed.AccessToken;
  if (typeof access !== 'string' || !access) return {error: NOT_A_TOKEN};
  return {value: JSON.stringify(parsed)};
}

function parseObject(text) {
  try {
    const value = JSON.parse(text);
    return value && typeof value === 'object' && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

/** A password input with a Show/Hide toggle (a real button, named by its text). */
function revealable(input, title) {
  const label = h('span', {}, 'Show');
  const button = h('button', {type: 'button', class: 'reveal', 'aria-pressed': 'false', 'aria-controls': input.id},
    label, hiddenText(` ${title}`));
  button.addEventListener('click', () => {
    const show = input.type === 'password';
    input.type = show ? 'text' : 'password';
    button.setAttribute('aria-pressed', String(show));
    label.textContent = show ? 'Hide' : 'Show';
  });
  return h('div', {class: 'with-button'}, input, button);
}

class IntField extends Field {
  constructor(name, schema, ctx) {
    super(name, schema, ctx);
    let shown = '';
    if (this.stored !== undefined && this.stored !== null) shown = String(this.stored);
    else if (ctx.mode === 'add' && Number.isInteger(schema.default)) shown = String(schema.default);
    this.initial = shown;
    this.input = h('input', {
      id: this.id, name, type: 'number', inputmode: 'numeric', step: '1', value: shown,
      min: schema.minimum, max: schema.maximum, readOnly: this.readOnly, required: this.mustFill,
    });
    this.input.addEventListener('input', () => this.changed());
    this.describe(this.input);
    this.frame(this.input);
  }

  rawValue() {
    // A number input reads "" for text it cannot parse; badInput tells it from empty.
    return this.input.validity.badInput ? 'bad' : this.input.value;
  }

  parse(raw) {
    const value = Number(raw);
    const {minimum: min, maximum: max} = this.schema;
    if (!/^-?\d+$/.test(raw.trim()) || !Number.isSafeInteger(value)) return {error: 'Enter a whole number.'};
    if ((min !== undefined && value < min) || (max !== undefined && value > max)) {
      if (min !== undefined && max !== undefined) return {error: `Enter a number from ${min} to ${max}.`};
      return {error: min !== undefined ? `Enter a number of at least ${min}.` : `Enter a number of at most ${max}.`};
    }
    return {include: true, value};
  }

  fill(value) {
    this.input.value = value === null || value === undefined ? '' : String(value);
  }
}

class BoolField extends Field {
  constructor(name, schema, ctx) {
    super(name, schema, ctx);
    const checked = this.stored !== undefined ? this.stored === true : schema.default === true;
    this.initial = checked;
    this.input = h('input', {id: this.id, name, type: 'checkbox', checked, disabled: this.readOnly});
    this.input.addEventListener('change', () => this.changed());
    this.errorEl = h('p', {class: 'error', id: this.errorId, hidden: true});
    const help = schema.description ? h('p', {class: 'help', id: this.helpId}, schema.description) : null;
    if (help) describedBy(this.input, this.helpId, true);
    this.el = h('div', {class: 'field check', 'data-field': name},
      h('div', {class: 'check-row'}, this.input, h('label', {for: this.id}, this.title)), this.errorEl, help);
  }

  rawValue() {
    return this.input.checked;
  }

  read() {
    return {include: true, value: this.input.checked};
  }

  isSet() {
    return this.input.checked !== this.initial;
  }

  fill(value) {
    this.input.checked = value === true;
  }
}

/** An enum: a select whose options keep their JSON values (ints stay ints, null stays null). */
class ChoiceField extends Field {
  constructor(name, schema, ctx) {
    super(name, schema, ctx);
    this.values = [];
    this.input = h('select', {id: this.id, name, disabled: this.readOnly, required: this.mustFill});
    const current = this.stored !== undefined ? this.stored : (ctx.mode === 'add' ? schema.default : undefined);
    if (!schema.enum.includes(null) && (current === undefined || current === null)) {
      this.addOption('', 'Choose…', current === undefined || current === null);
    }
    for (const value of schema.enum) {
      this.addOption(value, value === null ? '(not set)' : humanize(value), value === current);
    }
    this.initial = this.rawValue();
    this.input.addEventListener('change', () => this.changed());
    this.describe(this.input);
    this.frame(this.input);
  }

  addOption(value, text, selected) {
    // Options carry the value as text ("" for none); the JSON value (an int stays an int) is kept by index.
    this.values.push(value);
    this.input.append(h('option', {value: value === null ? '' : String(value)}, text));
    if (selected) this.input.selectedIndex = this.values.length - 1;
  }

  rawValue() {
    const value = this.values[this.input.selectedIndex];
    return value === undefined ? '' : value;
  }

  read() {
    const value = this.rawValue();
    if (value === '') {
      if (this.mustFill) return {error: 'Choose one.'};
      return {include: false};
    }
    return {include: true, value};
  }

  isSet() {
    const value = this.rawValue();
    return value !== '' && value !== null && value !== this.initial;
  }

  fill(value) {
    const index = this.values.findIndex((v) => v === value);
    if (index >= 0) {
      this.input.selectedIndex = index;
      this.changed();
    }
  }
}

/** A reference to a keychain credential: a select of those of x-keychain-type, and Generate New. */
class KeychainField extends Field {
  constructor(name, schema, ctx) {
    super(name, schema, ctx);
    this.keyType = schema['x-keychain-type'] || 'SSH_KEY_PAIR';
    this.values = [];
    this.input = h('select', {id: this.id, name, disabled: this.readOnly, required: this.mustFill});
    this.addOption(null, nullable(schema) ? 'None' : 'Choose…');
    if (this.stored !== undefined && this.stored !== null) this.addOption(this.stored, `Key #${this.stored}`);
    this.select(this.stored ?? null);
    this.initial = this.rawValue();
    this.status = h('p', {class: 'note', role: 'status'});
    const canGenerate = !this.readOnly && this.keyType === 'SSH_KEY_PAIR' && ctx.keychain && ctx.keychain.canWrite;
    this.generateButton = canGenerate
      ? h('button', {type: 'button', class: 'secondary', onclick: () => this.generate()}, 'Generate New')
      : null;
    this.input.addEventListener('change', () => this.changed());
    this.describe(this.input);
    this.frame(h('div', {class: 'with-button'}, this.input, this.generateButton), {extra: this.status});
    if (ctx.keychain) this.load();
  }

  addOption(value, text) {
    const index = this.values.findIndex((v) => v === value);
    if (index >= 0) {
      this.input.options[index].textContent = text;
      return;
    }
    this.values.push(value);
    this.input.append(h('option', {value: value === null ? '' : String(value)}, text));
  }

  select(value) {
    const index = this.values.findIndex((v) => v === value);
    if (index >= 0) this.input.selectedIndex = index;
  }

  async load() {
    try {
      const keys = await this.ctx.keychain.list(this.keyType);
      for (const key of keys) this.addOption(key.id, key.name);
    } catch (error) {
      this.status.textContent = `The keychain cannot be listed: ${error.message}`;
    }
  }

  async generate() {
    const name = this.ctx.credentialName();
    if (!name) {
      this.ctx.nameError('Enter a Name first: the new key pair is named after it.');
      return;
    }
    this.generateButton.disabled = true;
    this.status.textContent = 'Generating a key pair…';
    try {
      const key = await this.ctx.keychain.generate(`${name} Key`, this.keyType);
      this.addOption(key.id, key.name);
      this.select(key.id);
      this.setError('');
      this.status.textContent = `Generated and selected the key pair "${key.name}".`;
      this.changed();
    } catch (error) {
      this.status.textContent = '';
      this.setError(error.message);
    } finally {
      this.generateButton.disabled = false;
    }
  }

  rawValue() {
    const value = this.values[this.input.selectedIndex];
    return value === undefined ? null : value;
  }

  read() {
    const value = this.rawValue();
    if (value === null && this.mustFill) return {error: 'Choose one.'};
    if (value === null && !nullable(this.schema)) return {include: false};
    return {include: true, value};
  }

  isSet() {
    return this.rawValue() !== null && this.rawValue() !== this.initial;
  }

  fill(value) {
    this.select(value);
  }
}

/** A JSON document read from a file in the browser, previewed with its x-json-masked keys hidden. */
class JsonFileField extends Field {
  constructor(name, schema, ctx) {
    super(name, schema, ctx);
    this.text = '';
    this.initial = '';
    this.fileInput = h('input', {type: 'file', class: 'vh-file', accept: '.json,application/json', tabindex: '-1',
      'aria-hidden': 'true', 'aria-label': 'Choose File'});
    this.button = h('button', {type: 'button', class: 'secondary', id: this.id, disabled: this.readOnly,
      onclick: () => this.fileInput.click()}, 'Choose File');
    this.fileName = h('span', {class: 'note', id: uid('file')}, 'No file chosen');
    describedBy(this.button, this.fileName.id, true);
    const previewId = uid('preview');
    let placeholder = 'Choose a file to preview it here.';
    if (this.keepsStored) placeholder = 'unchanged';
    this.preview = h('textarea', {id: previewId, class: 'mono', rows: '8', readOnly: true, placeholder,
      spellcheck: 'false'});
    if (this.readOnly && this.stored !== undefined) this.preview.value = String(this.stored);
    this.fileInput.addEventListener('change', () => this.choose());
    this.describe(this.button);
    describedBy(this.preview, this.helpId, Boolean(schema.description));
    this.frame(h('div', {class: 'file-row'}, this.button, this.fileInput, this.fileName), {
      labelFor: false,
      extra: h('div', {class: 'preview'}, h('label', {for: previewId}, `Preview ${this.title}`), this.preview),
    });
    this.button.setAttribute('aria-describedby',
      [this.button.getAttribute('aria-describedby'), `${this.id}-label`].filter(Boolean).join(' '));
  }

  focusTarget() {
    return this.button;
  }

  async choose() {
    const file = this.fileInput.files && this.fileInput.files[0];
    this.fileInput.value = '';
    if (!file) return;
    this.fileName.textContent = file.name;
    if (file.size > LONG_FILE_BYTES) {
      this.refuse(`"${file.name}" is too large for this field (at most 64 KiB).`);
      return;
    }
    const text = await file.text();
    const problem = checkJsonDocument(text, this.schema['x-json-keys'] || []);
    if (problem) {
      this.refuse(`"${file.name}" was not used: ${problem}`);
      return;
    }
    this.text = text;
    this.preview.value = maskedPreview(text, this.schema['x-json-masked'] || []);
    this.setError('');
    this.changed();
  }

  refuse(message) {
    this.text = '';
    this.preview.value = '';
    this.setError(message);
    this.changed();
  }

  rawValue() {
    return this.text;
  }

  read() {
    if (!this.text) {
      if (this.keepsStored || !this.mustFill) return {include: false};
      return {error: 'Choose a file.'};
    }
    return {include: true, value: this.text};
  }

  fill() {}
}

/** Why ``text`` is not a JSON object holding non-empty strings at ``keys``, or '' when it is. */
export function checkJsonDocument(text, keys) {
  const parsed = parseObject(text);
  if (parsed === null) return 'it is not a JSON object.';
  const missing = keys.filter((key) => typeof parsed[key] !== 'string' || !parsed[key]);
  return missing.length ? `it has no ${missing.join(', ')}.` : '';
}

function maskedPreview(text, masked) {
  const parsed = JSON.parse(text);
  for (const key of masked) if (key in parsed) parsed[key] = REDACTED;
  return JSON.stringify(parsed, null, 2);
}

/** The "Drives List" a provider's x-drive-listing offers: filled by its method once a token is there. */
export class DriveList {
  constructor(hint, fields, ctx) {
    this.hint = hint;
    this.fields = fields;
    this.ctx = ctx;
    this.drives = [];
    this.id = uid('drives');
    this.input = h('select', {id: this.id, disabled: true});
    this.input.append(h('option', {value: ''}, 'Enter a token to list the drives'));
    this.input.addEventListener('change', () => this.choose());
    this.status = h('p', {class: 'note', role: 'status', id: uid('drives-status')});
    describedBy(this.input, this.status.id, true);
    this.button = h('button', {type: 'button', class: 'secondary', onclick: () => this.load(true)}, 'List Drives');
    this.el = h('div', {class: 'field', 'data-field': 'x-drive-listing'},
      h('div', {class: 'label-row'}, h('label', {for: this.id}, hint.title || 'Drives')),
      h('div', {class: 'with-button'}, this.input, this.button), this.status);
    this.timer = null;
    for (const param of hint.params) {
      const field = fields.get(param);
      if (field) field.onChange(() => this.schedule());
    }
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(), 300);
  }

  args() {
    const args = {};
    for (const param of this.hint.params) {
      const field = this.fields.get(param);
      if (!field) continue;
      const value = typeof field.token === 'function' ? field.token() : field.rawValue();
      if ((value === null || value === '') && field.keepsStored && field.stored) {
        args[param] = field.stored;  // editing: the stored token, which the form never shows
        continue;
      }
      if (value === null || value === '') {
        if (field.required) return null;
        continue;
      }
      args[param] = value;
    }
    return args;
  }

  async load(again = false) {
    const args = this.args();
    if (args === null) {
      if (again) this.status.textContent = 'Enter a token first.';
      return;
    }
    const asked = JSON.stringify(args);
    if (asked === this.asked && !again) return;
    this.asked = asked;
    this.status.textContent = 'Listing drives…';
    try {
      const drives = await this.ctx.call(this.hint.method, [args]);
      if (asked !== this.asked) return;
      this.drives = Array.isArray(drives) ? drives : [];
      this.input.replaceChildren(h('option', {value: ''}, this.drives.length ? 'Choose a drive' : 'No drives found'));
      this.drives.forEach((drive, index) => {
        const title = `${drive.name || humanize(drive.drive_type)}${drive.description ? ` (${drive.description})` : ''}`;
        this.input.append(h('option', {value: String(index)}, `${title} - ${drive.drive_id}`));
      });
      this.input.disabled = this.drives.length === 0;
      this.status.textContent = this.drives.length ? `${this.drives.length} drive(s) found; choosing one fills the fields below.` : '';
    } catch (error) {
      if (asked !== this.asked) return;
      this.asked = null;
      this.input.disabled = true;
      this.status.textContent = `The drives cannot be listed: ${error.message}`;
    }
  }

  choose() {
    const drive = this.drives[Number(this.input.value)];
    if (!drive || this.input.value === '') return;
    for (const [name, field] of this.fields) {
      const hint = field.schema['x-drive-listing'];
      if (hint && hint.key in drive) field.fill(drive[hint.key]);
    }
  }
}
