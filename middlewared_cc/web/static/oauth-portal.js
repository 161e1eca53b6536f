// /oauth/portal/<TYPE>?origin=<opener>: TrueNAS's OAuth portal protocol, served by the daemon. It logs in to
// the daemon (the page's login if this window has one, else a password), starts a CALLBACK login that
// records the opener's origin (the daemon refuses one it does not allow), and goes to the provider; the
// callback page posts {oauth_portal: true, result | error} back to that origin.

import {h} from './dom.js';
import {Rpc} from './rpc.js';

const TOKEN_KEY = 'middlewared-cc.token';
const data = JSON.parse(document.getElementById('oauth-data').textContent || '{}');
const status = document.getElementById('oauth-status');
const main = document.querySelector('main');

async function begin(rpc) {
  status.textContent = 'Starting the login…';
  try {
    const started = await rpc.call('cloudsync.oauth.start', [{provider: data.provider, mode: 'CALLBACK',
      origin: location.origin, portal_origin: data.origin}]);
    location.assign(started.authorize_url);
  } catch (error) {
    status.textContent = `The login cannot start: ${error.message}`;
  }
}

async function run() {
  if (!data.provider || !data.origin) {
    status.textContent = 'Open this page as <portal URL>?origin=<the page that wants the token>.';
    return;
  }
  const rpc = new Rpc(Rpc.pageUrl());
  await rpc.open();
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    const answer = await rpc.call('auth.login_ex', [{mechanism: 'TOKEN_PLAIN', token}]).catch(() => null);
    if (answer && answer.response_type === 'SUCCESS') return begin(rpc);
  }
  status.textContent = 'Log in to the daemon to continue.';
  const user = h('input', {id: 'portal-user', autocomplete: 'username'});
  const pass = h('input', {id: 'portal-pass', type: 'password', autocomplete: 'current-password'});
  const form = h('form', {class: 'login'},
    h('label', {for: 'portal-user'}, 'Username'), user,
    h('label', {for: 'portal-pass'}, 'Password'), pass,
    h('button', {type: 'submit', class: 'primary'}, 'Log In'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const answer = await rpc.call('auth.login_ex', [{mechanism: 'PASSWORD_PLAIN', username: user.value,
      password: pass.value}]).catch(() => null);
    if (answer && answer.response_type === 'SUCCESS') begin(rpc);
    else status.textContent = 'Wrong username or password.';
  });
  main.append(form);
  user.focus();
}

run();
