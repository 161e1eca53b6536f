// Small DOM helpers. Elements are built, never parsed from strings: every text from the daemon goes in as text.

let counter = 0;

/** A fresh id for label/description links. */
export function uid(prefix) {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** h('button', {type: 'button', class: 'x', onclick}, 'text', child): an element. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'value' || key === 'checked' || key === 'disabled' || key === 'readOnly') el[key] = value;
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child);
  }
}

/** Text for screen readers only. */
export function hiddenText(text) {
  return h('span', {class: 'vh', text});
}

/** Add/remove an id in an element's aria-describedby list. */
export function describedBy(el, id, on) {
  const ids = new Set((el.getAttribute('aria-describedby') || '').split(/\s+/).filter(Boolean));
  if (on) ids.add(id); else ids.delete(id);
  if (ids.size) el.setAttribute('aria-describedby', [...ids].join(' '));
  else el.removeAttribute('aria-describedby');
}

/** "PERSONAL" -> "Personal", "DOCUMENT_LIBRARY" -> "Document Library"; other text as it is. */
export function humanize(value) {
  if (value === null || value === undefined) return '(not set)';
  const text = String(value);
  if (!/^[A-Z0-9_]+$/.test(text) || /^[0-9]+$/.test(text)) return text;
  return text.toLowerCase().split('_').map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join(' ');
}

/** "1 credential", "3 credentials". */
export function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
