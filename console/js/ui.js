// What pages share besides building elements: notices, actions and dialogs.
import { h } from './dom.js';

let refresh = async () => {};

/** Sets what refreshes the current page (the shell's loop). */
export function onRefresh(fn) {
  refresh = fn;
}

/** A notice at the corner of the screen; kind is ok or bad. */
export function notify(text, kind = 'ok') {
  const area = document.getElementById('notices');
  const notice = h('div', { class: `notice notice-${kind}`, role: kind === 'bad' ? 'alert' : 'status' }, text);
  area.appendChild(notice);
  setTimeout(() => notice.remove(), kind === 'bad' ? 8000 : 4000);
}

/** Runs an action of a button, tells how it went, and refreshes the page. */
export async function act(button, action, success) {
  button.disabled = true;
  try {
    const answer = await action();
    notify(typeof success === 'function' ? success(answer) : success, 'ok');
  } catch (e) {
    notify(`${e.problem && e.problem.title ? `${e.problem.title}: ` : ''}${e.message}`, 'bad');
  } finally {
    button.disabled = false;
  }
  await refresh();
}

/**
 * A modal dialog with a form. `body` is the form's inner part; `submit` gets the
 * form and resolves when done (a thrown error is shown and keeps the dialog open).
 */
export function dialog({ title, body, confirm, danger = false, submit }) {
  const error = h('div', { class: 'dialog-error', role: 'alert' });
  const confirmButton = h('button', { type: 'submit', class: danger ? 'btn btn-danger' : 'btn btn-primary' }, confirm);
  const cancel = h('button', { type: 'button', class: 'btn', on: { click: () => close() } }, 'Cancel');
  const form = h('form', { method: 'dialog' }, h('h2', {}, title), body, error,
    h('div', { class: 'dialog-actions' }, cancel, confirmButton));
  const el = h('dialog', { class: 'dialog' }, form);
  function close() {
    el.close();
    el.remove();
  }
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    confirmButton.disabled = true;
    try {
      await submit(form);
      close();
      await refresh();
    } catch (e) {
      error.textContent = e.message;
      confirmButton.disabled = false;
    }
  });
  document.body.appendChild(el);
  el.showModal();
  return el;
}

