// Log In To Provider (add form) and Reconnect (edit form): the daemon runs the OAuth login
// (cloudsync.oauth.start / finish); nothing here names a provider: it follows the token field's x-oauth hint.

import {h, uid} from './dom.js';

export const CHANNEL = 'middlewared-cc.oauth';

/** The login's way back: the daemon's /oauth/callback when the provider can reach it (https, or this
 * machine), else rclone's loopback address, which the person pastes. */
function modeFor(loc) {
  const local = ['localhost', '127.0.0.1', '[::1]'].includes(loc.hostname);
  return loc.protocol === 'https:' || local ? 'CALLBACK' : 'LOOPBACK';
}

export class OAuthLogin {
  /** hint: the token schema's x-oauth; fields: the form's fields; ctx: the form's context; type: provider. */
  constructor(hint, fields, ctx, {type, credentialId = null, onReconnected = null}) {
    this.hint = hint;
    this.fields = fields;
    this.ctx = ctx;
    this.type = type;
    this.credentialId = credentialId;
    this.onReconnected = onReconnected;
    this.pending = null;
    const label = credentialId === null ? 'Log In To Provider' : 'Reconnect';
    this.button = h('button', {type: 'button', class: 'secondary', onclick: () => this.start()}, label);
    this.status = h('p', {class: 'note', role: 'status', id: uid('oauth-status')});
    this.pasteId = uid('oauth-paste');
    this.paste = h('input', {id: this.pasteId, type: 'text', autocomplete: 'off', spellcheck: 'false',
      placeholder: 'the address: 127.0.0.1:53682/?code=…'});
    this.finishButton = h('button', {type: 'button', class: 'secondary', onclick: () => this.finishPasted()}, 'Finish Login');
    this.pasteBox = h('div', {class: 'field', hidden: true},
      h('label', {for: this.pasteId}, 'Address after approving'),
      h('p', {class: 'help'}, 'After you approve access, the login window shows an address that does not load. '
        + 'Copy that whole address from its address bar and paste it here.'),
      h('div', {class: 'with-button'}, this.paste, this.finishButton));
    const warnings = [...(hint.warnings || [])];
    this.clientNote = h('p', {class: 'note'});
    this.el = h('div', {class: 'field oauth-login', 'data-field': 'x-oauth'},
      h('div', {class: 'with-button'}, this.button), this.status, this.pasteBox,
      warnings.length ? h('details', {class: 'group'}, h('summary', {}, 'Before you log in'),
        h('ul', {class: 'oauth-warnings'}, warnings.map((w) => h('li', {}, w)))) : null,
      this.clientNote);
    const clientField = fields.get('client_id');
    if (clientField) clientField.onChange(() => this.describeClient());
    this.describeClient();
    this.listener = (event) => this.heard(event.data);
  }

  describeClient() {
    const field = this.fields.get('client_id');
    const blank = !field || (!field.rawValue() && !field.stored);
    this.clientNote.textContent = blank && this.hint.shared_client
      ? 'Client ID is empty: logging in here uses the OAuth app set in the daemon\'s settings ([oauth] section), '
        + 'if there is one. A pasted token with an empty Client ID is refreshed with rclone\'s built-in app, '
        + 'which for Google Drive is being retired during 2026.'
      : '';
  }

  value(name) {
    const field = this.fields.get(name);
    if (!field) return '';
    const raw = field.rawValue();
    return typeof raw === 'string' ? raw : '';
  }

  async start() {
    this.stop();
    const mode = modeFor(location);
    const params = {provider: this.type, mode, origin: location.origin};
    const clientId = this.value('client_id');
    if (clientId) params.client_id = clientId;
    const secret = this.value('client_secret');
    if (secret) params.client_secret = secret;
    if (this.credentialId !== null) params.credential_id = this.credentialId;
    if (mode === 'LOOPBACK') delete params.origin;
    this.status.textContent = 'Starting the login…';
    let started;
    try {
      started = await this.ctx.call(this.hint.start, [params]);
    } catch (error) {
      this.status.textContent = `The login cannot start: ${error.message}`;
      return;
    }
    this.pending = {state: started.state, mode};
    this.channel = 'BroadcastChannel' in window ? new BroadcastChannel(CHANNEL) : null;
    if (this.channel) this.channel.onmessage = this.listener;
    window.addEventListener('message', this.listener);
    this.popup = window.open(started.authorize_url, '_blank', 'width=640,height=720');
    if (mode === 'LOOPBACK') {
      this.pasteBox.hidden = false;
      this.status.textContent = 'Approve access in the login window, then paste the address it ends on below.';
      this.paste.value = '';
    } else {
      this.status.textContent = 'Approve access in the login window; this form is filled in when you do.';
    }
    if (!this.popup) this.status.append(' ', h('a', {href: started.authorize_url, target: '_blank', rel: 'opener'}, 'Open the login window'));
  }

  heard(data) {
    if (!this.pending || !data || data.oauth_callback !== true) return;
    if (data.state && data.state === this.pending.state) this.finish({state: this.pending.state});
    else if (!data.state && data.redirect_url) this.finish({state: this.pending.state, redirect_url: data.redirect_url});
  }

  finishPasted() {
    if (!this.pending) return;
    const url = this.paste.value.trim();
    if (!url) {
      this.status.textContent = 'Paste the address first.';
      return;
    }
    this.finish({state: this.pending.state, redirect_url: url});
  }

  async finish(params) {
    const pending = this.pending;
    if (!pending || pending.finishing) return;
    pending.finishing = true;
    this.status.textContent = 'Finishing the login…';
    try {
      const result = await this.ctx.call(this.hint.finish, [params]);
      this.stop();
      this.pasteBox.hidden = true;
      if (this.credentialId !== null) {
        this.status.textContent = 'Reconnected: the credential has a new token.';
        if (this.onReconnected) this.onReconnected(result);
        return;
      }
      for (const [name, value] of Object.entries(result)) {
        const field = this.fields.get(name);
        if (field && typeof value !== 'object') field.fill(value);
      }
      this.button.textContent = 'Logged In To Provider';
      this.status.textContent = 'Logged in: the token is filled in. Verify Credential, then Save.';
    } catch (error) {
      pending.finishing = false;
      if (error && error.errno === 11) return;  // EAGAIN: the callback has not finished yet
      this.status.textContent = `The login did not finish: ${error.message}`;
      if (!/paste|address/i.test(error.message)) this.stop();
    }
  }

  stop() {
    this.pending = null;
    if (this.channel) this.channel.close();
    this.channel = null;
    window.removeEventListener('message', this.listener);
  }
}
