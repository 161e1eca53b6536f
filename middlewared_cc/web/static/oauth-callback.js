// The page /oauth/callback renders: tell the window that started the login (same origin only, never a
// secret), or, for a portal login, post the result to the origin the daemon checked at its start.

const CHANNEL = 'middlewared-cc.oauth';
const data = JSON.parse(document.getElementById('oauth-data').textContent || '{}');
const status = document.getElementById('oauth-status');

function tellOpener(message) {
  if ('BroadcastChannel' in window) {
    const channel = new BroadcastChannel(CHANNEL);
    channel.postMessage(message);
    channel.close();
  }
  if (window.opener) window.opener.postMessage(message, location.origin);
}

if (data.status === 'portal') {
  const message = data.error ? {oauth_portal: true, error: data.error} : {oauth_portal: true, result: data.result};
  if (window.opener) {
    window.opener.postMessage(message, data.origin);
    status.textContent = data.error ? `Login failed: ${data.error}` : 'Logged in. This window closes now.';
    if (!data.error) setTimeout(() => window.close(), 300);
  } else {
    status.textContent = 'The page that asked for this login has gone; close this window and try again.';
  }
} else if (data.status === 'done') {
  tellOpener({oauth_callback: true, state: data.state});
  setTimeout(() => window.close(), 500);
} else if (data.status === 'error') {
  if (data.state) tellOpener({oauth_callback: true, state: data.state});
} else if (data.status === 'no_state') {
  // The provider dropped state (pCloud does): the page that started the login knows its own.
  tellOpener({oauth_callback: true, redirect_url: location.href});
  status.textContent = 'Logged in. You can close this window; the form is being filled in.';
}
