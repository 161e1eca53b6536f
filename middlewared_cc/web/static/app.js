// The Cloud Credentials page: login, the list, the form. It talks only to /api/current (JSON-RPC 2.0).
// A login token from auth.generate_token is kept in sessionStorage (never a password or a key), so a reload
// stays logged in while it lasts; it is renewed while the page is open.

import {h, hiddenText} from './dom.js';
import {CredentialForm} from './form.js';
import {CredentialList} from './list.js';
import {HEALTH_EVENT, TokenHealthBoard} from './oauth.js';
import {callAlone, ConnectionLost, ENOTAUTHENTICATED, Rpc, RpcError} from './rpc.js';

const TOKEN_KEY = 'middlewared-cc.token';
const TOKEN_TTL = 600; // seconds a token lives: a closed tab's login ends within this
const TOKEN_RENEW_MS = 240_000;
const ALONE_TOKEN_TTL = 60; // seconds: a single-use token for a call on its own connection, spent at once
const WHOAMI_MS = 5_000; // how soon a revoked login is noticed (one auth.me per tab)
const COLLECTION = 'cloudsync.credentials.query';

class Page {
  constructor(root) {
    this.root = root;
    this.rpc = null;
    this.user = null;
    this.roles = new Set();
    this.providers = [];
    this.byType = new Map();
    this.list = null;
    this.form = null;
    this.timers = [];
    this.reconnecting = false;
    this.toasts = document.getElementById('toasts');
  }

  get canWrite() {
    return this.roles.has('FULL_ADMIN') || this.roles.has('CLOUD_SYNC_WRITE');
  }

  get keychain() {
    const canWrite = this.roles.has('FULL_ADMIN') || this.roles.has('KEYCHAIN_CREDENTIAL_WRITE');
    return {
      canWrite,
      list: (type) => this.call('keychaincredential.query',
        [[['type', '=', type]], {select: ['id', 'name'], order_by: ['name']}]),
      generate: async (name, type) => {
        const pair = await this.call('keychaincredential.generate_ssh_key_pair', []);
        const created = await this.call('keychaincredential.create', [{name, type, attributes: pair}]);
        return {id: created.id, name: created.name};
      },
    };
  }

  provider(type) {
    return this.byType.get(type) || null;
  }

  providerTitle(type) {
    const provider = this.byType.get(type);
    return provider ? provider.title : String(type);
  }

  async start() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      this.showLogin();
      return;
    }
    try {
      await this.connect();
      if (await this.loginWithToken(token)) {
        await this.enter();
        return;
      }
    } catch (error) {
      if (error instanceof ConnectionLost) {
        this.showLogin('The daemon cannot be reached. Try again in a moment.');
        return;
      }
    }
    sessionStorage.removeItem(TOKEN_KEY);
    this.showLogin('Your session has expired. Log in again.');
  }

  async connect() {
    if (this.rpc && !this.rpc.closed) return this.rpc;
    const rpc = new Rpc(Rpc.pageUrl());
    rpc.addEventListener('notification', (event) => this.notified(event.detail));
    rpc.addEventListener('close', () => this.connectionLost(rpc));
    await rpc.open();
    this.rpc = rpc;
    return rpc;
  }

  async loginWithToken(token) {
    const answer = await this.rpc.call('auth.login_ex', [{mechanism: 'TOKEN_PLAIN', token}]);
    return answer && answer.response_type === 'SUCCESS';
  }

  /** Call a method; a call refused for want of a login ends the session on this page. */
  async call(method, params = []) {
    try {
      return await this.rpc.call(method, params);
    } catch (error) {
      if (error instanceof RpcError && error.errno === ENOTAUTHENTICATED && this.user) {
        this.sessionEnded('Your session has ended. Log in again.');
      }
      throw error;
    }
  }

  /**
   * Call ``method`` on a short-lived connection of its own, logged in with a single-use token of this
   * login; aborting ``signal`` closes it, which makes the daemon cancel the call (rpc.js, callAlone).
   */
  async callAlone(method, params, signal) {
    const token = await this.call('auth.generate_token', [ALONE_TOKEN_TTL, {}, true, true]);
    return callAlone(Rpc.pageUrl(), token, method, params, signal);
  }

  // ----- login -----

  showLogin(message = '') {
    this.stopTimers();
    this.user = null;
    if (this.form) this.form.close();
    let method = 'password';
    const alert = h('p', {class: 'alert', role: 'alert', hidden: !message}, message);
    const username = h('input', {id: 'login-username', name: 'username', type: 'text', autocomplete: 'username',
      autocapitalize: 'none', spellcheck: 'false', required: true});
    const password = h('input', {id: 'login-password', name: 'password', type: 'password',
      autocomplete: 'current-password', required: true});
    const apiKey = h('input', {id: 'login-key', name: 'api_key', type: 'password', autocomplete: 'off',
      spellcheck: 'false'});
    const passwordPart = h('div', {},
      h('div', {class: 'field'}, h('label', {for: username.id}, 'Username'), username),
      h('div', {class: 'field'}, h('label', {for: password.id}, 'Password'), password));
    const keyPart = h('div', {hidden: true},
      h('div', {class: 'field'}, h('label', {for: apiKey.id}, 'API Key'), apiKey,
        h('p', {class: 'help'}, 'A key such as 1-AbC… from api_key.create or midclt-cc.')));
    const usePassword = h('button', {type: 'button', class: 'segment', 'aria-pressed': 'true'}, 'With Password');
    const useKey = h('button', {type: 'button', class: 'segment', 'aria-pressed': 'false'}, 'With API Key');
    const choose = (which) => {
      method = which;
      usePassword.setAttribute('aria-pressed', String(which === 'password'));
      useKey.setAttribute('aria-pressed', String(which === 'key'));
      passwordPart.hidden = which !== 'password';
      keyPart.hidden = which !== 'key';
      username.required = password.required = which === 'password';
      apiKey.required = which === 'key';
      (which === 'password' ? username : apiKey).focus();
    };
    usePassword.addEventListener('click', () => choose('password'));
    useKey.addEventListener('click', () => choose('key'));
    const submit = h('button', {type: 'submit', class: 'primary'}, 'Log In');
    const form = h('form', {class: 'card login-form', 'aria-labelledby': 'login-title'},
      h('h2', {id: 'login-title'}, 'Log in'),
      alert,
      h('div', {class: 'segments', role: 'group', 'aria-label': 'Login method'}, usePassword, useKey),
      passwordPart, keyPart, submit);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const fail = (text) => {
        alert.textContent = text;
        alert.hidden = false;
      };
      const secret = method === 'password' ? password.value : apiKey.value.trim();
      if ((method === 'password' && (!username.value.trim() || !secret)) || !secret) {
        fail(method === 'password' ? 'Enter a username and a password.' : 'Enter an API key.');
        return;
      }
      submit.disabled = true;
      form.setAttribute('aria-busy', 'true');
      try {
        await this.connect();
        const ok = method === 'password'
          ? await this.rpc.call('auth.login', [username.value.trim(), secret])
          : await this.rpc.call('auth.login_with_api_key', [secret]);
        if (!ok) {
          fail(method === 'password' ? 'Wrong username or password.' : 'This API key was not accepted.');
          (method === 'password' ? password : apiKey).select();
          return;
        }
        password.value = '';
        apiKey.value = '';
        await this.renewToken();
        await this.enter();
      } catch (error) {
        fail(error instanceof ConnectionLost ? 'The daemon cannot be reached. Try again in a moment.' : error.message);
      } finally {
        submit.disabled = false;
        form.removeAttribute('aria-busy');
      }
    });
    this.root.replaceChildren(
      h('header', {class: 'top'}, h('h1', {id: 'page-title'}, 'Cloud Credentials')),
      h('main', {class: 'login'}, form));
    this.root.removeAttribute('aria-busy');
    username.focus();
  }

  async renewToken() {
    const token = await this.call('auth.generate_token', [TOKEN_TTL, {}, true, false]);
    if (typeof token === 'string') sessionStorage.setItem(TOKEN_KEY, token);
  }

  // ----- logged in -----

  async enter() {
    this.buffered = [];
    const [me, providers] = await Promise.all([this.call('auth.me'), this.call('cloudsync.providers'),
      this.call('core.subscribe', [COLLECTION])]);
    this.user = me;
    this.roles = new Set((me.privilege && me.privilege.roles) || []);
    this.providers = providers;
    this.byType = new Map(providers.map((p) => [p.name, p]));
    this.health = new TokenHealthBoard(this);
    this.list = new CredentialList(this);
    this.renderMain();
    await this.loadList(true);
    this.health.load();
    this.startTimers();
  }

  /** Subscribe, then query; events that arrive meanwhile are replayed over the answer, in order. */
  async loadList(subscribed = false) {
    this.buffered = this.buffered || [];
    if (!subscribed) await this.call('core.subscribe', [COLLECTION]);
    const entries = await this.call('cloudsync.credentials.query', [[], {}]);
    const buffered = this.buffered;
    this.buffered = null;
    this.list.setAll(entries);
    for (const params of buffered) this.list.apply(params);
    this.root.removeAttribute('aria-busy');
  }

  notified(params) {
    if (params && params.collection === HEALTH_EVENT && this.health) this.health.apply(params);
    if (!params || params.collection !== COLLECTION) return;
    if (this.health) this.health.credentialEvent(params);
    if (this.buffered) {
      this.buffered.push(params);
      return;
    }
    if (!this.list) return;
    this.list.apply(params);
    if (this.form && this.form.entry && this.form.entry.id === params.id) {
      this.form.externalChange(params.msg, params.fields ? {...params.fields, id: params.id} : null);
    }
  }

  renderMain() {
    const who = this.user.pw_name || (this.user.api_key_id ? `API key ${this.user.api_key_id}` : 'you');
    this.banner = h('p', {class: 'banner', role: 'status', hidden: true});
    const add = this.canWrite
      ? h('button', {type: 'button', class: 'primary', id: 'add-credential',
        onclick: (event) => this.openForm(null, event.currentTarget)}, 'Add')
      : null;
    this.root.replaceChildren(
      h('header', {class: 'top'},
        h('h1', {id: 'page-title'}, 'Cloud Credentials'),
        h('div', {class: 'who'},
          h('span', {class: 'user'}, hiddenText('Logged in as '), who, this.canWrite ? null : h('span', {class: 'badge'}, 'read-only')),
          h('button', {type: 'button', class: 'secondary', onclick: () => this.logout()}, 'Log Out'))),
      this.banner,
      h('main', {class: 'main'},
        h('div', {class: 'list-head'}, h('p', {class: 'lead'},
          'Credentials for cloud storage providers, used by cloud sync tasks.'), add),
        this.list.el));
  }

  openForm(entry, opener) {
    if (this.form) return;
    this.form = new CredentialForm(this, entry || null, opener);
    this.form.open();
  }

  formClosed(form) {
    if (this.form === form) this.form = null;
  }

  /** Where focus goes when the control that had it is gone (its row was deleted). */
  focusHome() {
    const target = document.getElementById('add-credential') || document.getElementById('credential-filter');
    if (target) target.focus();
  }

  /** Ask before deleting ``entry``; the daemon's refusal is shown in the dialog as it came. */
  confirmDelete(entry, opener, deleted = null) {
    const name = entry.name;
    const titleId = 'confirm-title';
    const alert = h('p', {class: 'alert', role: 'alert', hidden: true});
    const confirm = h('button', {type: 'button', class: 'danger'}, 'Confirm');
    const cancel = h('button', {type: 'button', class: 'secondary', onclick: () => dialog.close()}, 'Cancel');
    const dialog = h('dialog', {class: 'confirm-dialog', 'aria-labelledby': titleId, 'aria-describedby': 'confirm-text'},
      h('h2', {id: titleId}, 'Delete Cloud Credential'),
      h('p', {id: 'confirm-text'}, `Delete the cloud credential "${name}"? This cannot be undone.`),
      alert,
      h('div', {class: 'dialog-foot'}, cancel, confirm));
    dialog.addEventListener('close', () => {
      dialog.remove();
      if (opener && opener.isConnected) opener.focus();
      else this.focusHome();
    });
    confirm.addEventListener('click', async () => {
      confirm.disabled = true;
      try {
        await this.call('cloudsync.credentials.delete', [entry.id]);
        if (this.list) this.list.remove(entry.id);
        this.toast(`Deleted "${name}".`);
        dialog.close();
        if (deleted) deleted();
      } catch (error) {
        alert.textContent = `"${name}" was not deleted: ${error.message}`;
        alert.hidden = false;
        confirm.hidden = true;
        cancel.textContent = 'Close';
        cancel.focus();
      }
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  }

  toast(text) {
    const item = h('p', {class: 'toast'}, text);
    this.toasts.append(item);
    while (this.toasts.childElementCount > 3) this.toasts.firstElementChild.remove();
    setTimeout(() => item.remove(), 5000);
  }

  startTimers() {
    this.stopTimers();
    this.timers.push(setInterval(() => this.renewToken().catch(() => {}), TOKEN_RENEW_MS));
    this.timers.push(setInterval(() => this.checkLogin(), WHOAMI_MS));
    this.visibility = () => {
      if (document.visibilityState === 'visible') this.checkLogin();
    };
    document.addEventListener('visibilitychange', this.visibility);
  }

  stopTimers() {
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    if (this.visibility) document.removeEventListener('visibilitychange', this.visibility);
    this.visibility = null;
  }

  /** A revoked key or a deleted user logs the connection out silently: ask who we are now and then. */
  async checkLogin() {
    if (!this.user || this.reconnecting) return;
    try {
      const me = await this.call('auth.me');
      const roles = new Set((me.privilege && me.privilege.roles) || []);
      const before = this.canWrite;
      this.roles = roles;
      if (before !== this.canWrite) {  // roles changed under us: redraw with or without the write controls
        if (this.form) this.form.close();
        const entries = [...this.list.entries.values()];
        this.list = new CredentialList(this);
        this.renderMain();
        this.list.setAll(entries);
      }
    } catch {
      // 207 is handled by call(); a lost connection by connectionLost().
    }
  }

  sessionEnded(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (this.rpc) this.rpc.close();
    this.rpc = null;
    this.list = null;
    this.showLogin(message);
  }

  async logout() {
    sessionStorage.removeItem(TOKEN_KEY);
    try {
      await this.rpc.call('auth.logout', []);
    } catch {
      // logged out either way
    }
    if (this.rpc) this.rpc.close();
    this.rpc = null;
    this.list = null;
    this.showLogin('You have logged out.');
  }

  /** The websocket dropped while logged in: reconnect with the stored token, then reload the list. */
  async connectionLost(rpc) {
    if (rpc !== this.rpc || !this.user) return;
    this.rpc = null;
    this.reconnecting = true;
    this.banner.hidden = false;
    this.banner.textContent = 'The connection to the daemon was lost. Reconnecting…';
    for (let delay = 250; ; delay = Math.min(delay * 2, 5000)) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      if (!this.user) return;
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (!token) {
        this.reconnecting = false;
        this.sessionEnded('Your session has expired. Log in again.');
        return;
      }
      try {
        await this.connect();
      } catch {
        continue;
      }
      try {
        if (!(await this.loginWithToken(token))) {
          this.reconnecting = false;
          this.sessionEnded('Your session has expired. Log in again.');
          return;
        }
        await this.renewToken();
        await this.loadList();
        if (this.health) this.health.load();
        this.reconnecting = false;
        this.banner.hidden = true;
        return;
      } catch {
        // the new socket failed too: keep trying
      }
    }
  }
}

new Page(document.getElementById('app')).start();
