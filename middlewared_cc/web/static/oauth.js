// Log In To Provider (add form), Reconnect (edit form) and token health: the daemon runs the OAuth login
// (cloudsync.oauth.start / finish) and says how each token is doing (cloudsync.oauth.health); nothing here
// names a provider: it follows the token field's x-oauth hint.

import {h, uid} from './dom.js';

export const CHANNEL = 'middlewared-cc.oauth';
export const HEALTH_EVENT = 'cloudsync.oauth.health';
const HEALTH_RELOAD_MS = 300;

/**
 * The token health of every OAuth credential (no secret in it), kept current by the daemon's
 * cloudsync.oauth.health events; the list marks the rows that need Reconnect, the form shows the details.
 */
export class TokenHealthBoard {
  constructor(app) {
    this.app = app;
    this.reports = new Map();
    this.watchers = new Set();
    this.reloadTimer = null;
  }

  get(id) {
    return this.reports.get(id) || null;
  }

  /** Subscribe and read them all (at login and after a reconnect); a daemon without it shows none. */
  async load() {
    try {
      await this.app.call('core.subscribe', [HEALTH_EVENT]);
      await this.reload();
    } catch {
      // token health is a help, never a reason for the page to fail
    }
  }

  async reload() {
    const reports = await this.app.call('cloudsync.oauth.health', []);
    const seen = new Set();
    for (const report of reports) {
      seen.add(report.id);
      this.set(report.id, report);
    }
    for (const id of [...this.reports.keys()]) if (!seen.has(id)) this.drop(id);
  }

  /** A cloudsync.oauth.health event. */
  apply(params) {
    if (params.fields && typeof params.id === 'number') this.set(params.id, params.fields);
  }

  /** A credential was added, changed or removed: its token (so its expiry) may be another one now. */
  credentialEvent(params) {
    if (params.msg === 'removed') {
      this.drop(params.id);
      return;
    }
    const provider = params.fields && params.fields.provider;
    const type = provider && typeof provider === 'object' ? provider.type : provider;
    const declared = this.app.provider(type);
    if (!declared || !declared.credentials_oauth) return;
    clearTimeout(this.reloadTimer);  // a burst of changes costs one read
    this.reloadTimer = setTimeout(() => this.reload().catch(() => {}), HEALTH_RELOAD_MS);
  }

  set(id, report) {
    this.reports.set(id, report);
    this.tell(id, report);
  }

  drop(id) {
    if (this.reports.delete(id)) this.tell(id, null);
  }

  tell(id, report) {
    if (this.app.list) this.app.list.healthChanged(id);
    for (const watcher of [...this.watchers]) watcher(id, report);
  }

  /** Call ``watcher(id, report)`` on each change until it returns false. */
  watch(watcher) {
    const wrapped = (id, report) => {
      if (watcher(id, report) === false) this.watchers.delete(wrapped);
    };
    this.watchers.add(wrapped);
  }
}

function when(iso) {
  const moment = new Date(iso);
  return Number.isNaN(moment.getTime()) ? iso : moment.toLocaleString();
}

/** The health of one credential's token, in words: when it expires, how its last refresh went. */
export class TokenHealthView {
  constructor(board, credentialId) {
    this.board = board;
    this.id = credentialId;
    this.expiry = h('li', {});
    this.refresh = h('li', {});
    this.el = h('div', {class: 'token-health', 'data-field': 'x-token-health', role: 'status'},
      h('p', {class: 'label'}, 'Token health'), h('ul', {}, this.expiry, this.refresh));
    this.show(board ? board.get(credentialId) : null);
    if (board) board.watch((id, report) => {
      if (!this.el.isConnected) return false;
      if (id === this.id) this.show(report);
      return true;
    });
  }

  show(report) {
    this.report = report;
    this.el.classList.toggle('bad', Boolean(report && report.needs_reconnect));
    if (!report) {
      this.expiry.textContent = 'Access token: not known yet.';
      this.refresh.textContent = '';
      return;
    }
    const expiry = report.expires_at;
    this.expiry.textContent = expiry === 'never' ? 'Access token: does not expire.'
      : !expiry ? 'Access token: its expiry is not recorded in the token.'
        : `Access token: ${report.expired ? 'expired' : 'expires'} ${when(expiry)}`
          + `${report.expired && report.refreshable ? ' (rclone renews it with the refresh token when it is next used).' : '.'}`;
    const last = report.last_refresh;
    if (last && last.ok) this.refresh.textContent = `Last refresh: ok, ${when(last.at)}.`;
    else if (last) this.refresh.textContent = `Last refresh: failed ${when(last.at)}: ${last.reason || 'no reason given'}.`;
    else if (report.needs_reconnect) this.refresh.textContent = 'The token has expired and holds no refresh token: it cannot be renewed.';
    else this.refresh.textContent = 'Last refresh: none seen since the daemon started.';
  }
}

/** The login's way back: the daemon's /oauth/callback when the provider can reach it (https, or this
 * machine), else rclone's loopback address, which the person pastes. */
function modeFor(loc) {
  const local = ['localhost', '127.0.0.1', '[::1]'].includes(loc.hostname);
  return loc.protocol === 'https:' || local ? 'CALLBACK' : 'LOOPBACK';
}

export class OAuthLogin {
  /**
   * hint: the token schema's x-oauth; fields: the form's fields; ctx: the form's context; type: provider.
   * credentialId (edit form): a login replaces that credential's token in place; health: its TokenHealthView,
   * whose report decides whether Reconnect is the form's main call to action.
   */
  constructor(hint, fields, ctx, {type, credentialId = null, onReconnected = null, health = null}) {
    this.hint = hint;
    this.fields = fields;
    this.ctx = ctx;
    this.type = type;
    this.credentialId = credentialId;
    this.onReconnected = onReconnected;
    this.pending = null;
    this.button = h('button', {type: 'button', class: 'secondary', onclick: () => this.start()}, 'Log In To Provider');
    this.status = h('p', {class: 'note', role: 'status', id: uid('oauth-status')});
    this.reconnectNote = h('p', {class: 'note', hidden: true});
    // The daemon's /oauth/callback is the way back where the provider can reach it; an app registered with
    // rclone's loopback address instead needs the address pasted, which this choice asks for.
    this.pasteChoice = modeFor(location) === 'CALLBACK'
      ? h('input', {type: 'checkbox', id: uid('oauth-paste-choice')}) : null;
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
      health ? health.el : null,
      this.reconnectNote,
      h('div', {class: 'with-button'}, this.button), this.status,
      this.pasteChoice ? h('div', {class: 'oauth-paste-choice'},
        h('div', {class: 'check-row'}, this.pasteChoice, h('label', {for: this.pasteChoice.id}, 'Paste the address instead')),
        h('p', {class: 'help'}, 'For an app registered with rclone\'s loopback address (127.0.0.1:53682 or '
          + 'localhost:53682) rather than this daemon\'s /oauth/callback.')) : null,
      this.pasteBox,
      warnings.length ? h('details', {class: 'group'}, h('summary', {}, 'Before you log in'),
        h('ul', {class: 'oauth-warnings'}, warnings.map((w) => h('li', {}, w)))) : null,
      this.clientNote);
    const clientField = fields.get('client_id');
    if (clientField) clientField.onChange(() => this.describeClient());
    this.describeClient();
    this.listener = (event) => this.heard(event.data);
    if (credentialId !== null) {
      this.health = health;
      this.showHealth(health ? health.report : null);
      if (health && health.board) health.board.watch((id, report) => {
        if (!this.el.isConnected) return false;
        if (id === credentialId) this.showHealth(report);
        return true;
      });
    }
  }

  /** Edit form: Reconnect is the call to action only when the token can no longer be refreshed. */
  showHealth(report) {
    const broken = Boolean(report && report.needs_reconnect);
    this.button.textContent = broken ? 'Reconnect' : 'Log In Again';
    this.button.className = broken ? 'primary' : 'secondary';
    this.reconnectNote.hidden = !broken;
    this.reconnectNote.className = broken ? 'alert' : 'note';
    this.reconnectNote.textContent = broken
      ? 'This credential\'s token can no longer be refreshed, so anything using it fails. Reconnect logs in to '
        + 'the provider again and replaces the token in place (same credential, nothing else changes).'
      : '';
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
    const mode = this.pasteChoice && this.pasteChoice.checked ? 'LOOPBACK' : modeFor(location);
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
