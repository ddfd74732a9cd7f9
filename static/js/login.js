/**
 * @file The log-in and register screen. `GET /api/info` says whether any account exists: the
 * first person to register becomes the admin, and the page says so before they do.
 */

import { api, ApiError } from './api.js';
import { field, h, replace } from './dom.js';

/**
 * Renders the screen into `main`.
 *
 * @param {HTMLElement} main
 * @param {{onLoggedIn: (user: any) => void}} hooks
 */
export async function renderLogin(main, { onLoggedIn }) {
  let info = { firstUser: false, registrationOpen: false };
  try {
    info = await api('GET', '/api/info');
  } catch (e) {
    replace(main, h('p', { class: 'error', role: 'alert', text: e.message }));
    return;
  }
  const wantRegister = info.firstUser;
  show(wantRegister ? 'register' : 'login');

  function show(mode) {
    const isRegister = mode === 'register';
    const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
    const username = field('Username', {
      name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none',
      spellcheck: 'false',
    });
    const password = field('Password', {
      type: 'password', name: 'password', required: true,
      autocomplete: isRegister ? 'new-password' : 'current-password',
    }, isRegister ? 'At least 8 characters.' : null);
    const submit = h('button', { type: 'submit', class: 'primary', text: isRegister ? 'Create account' : 'Log in' });
    const form = h('form', { class: 'card auth-form', novalidate: true, 'aria-labelledby': 'auth-title' },
      h('h1', { id: 'auth-title', text: isRegister ? (info.firstUser ? 'Create the admin account' : 'Create an account') : 'Log in to sashad' }),
      info.firstUser && isRegister
        ? h('p', { class: 'notice', 'data-first-user': '' },
          'No account exists yet. The account you create now will be the ',
          h('strong', { text: 'admin' }), ' of this sashad server.')
        : null,
      username.field, password.field, error,
      h('div', { class: 'actions' }, submit),
      switcher(isRegister));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      error.hidden = true;
      const credentials = { username: username.input.value.trim(), password: password.input.value };
      if (!credentials.username || !credentials.password) {
        showError(error, 'Enter a username and a password.');
        return;
      }
      submit.disabled = true;
      try {
        if (isRegister) await api('POST', '/api/auth/register', credentials, { quiet401: true });
        const answer = await api('POST', '/api/auth/login', credentials, { quiet401: true });
        password.input.value = '';
        onLoggedIn(answer.user);
      } catch (e) {
        password.input.value = '';
        showError(error, e instanceof ApiError ? e.message : String(e));
        password.input.focus();
      } finally {
        submit.disabled = false;
      }
    });
    replace(main, h('div', { class: 'auth-screen' }, form));
    username.input.focus();
  }

  function switcher(isRegister) {
    if (isRegister && !info.firstUser) {
      return h('p', { class: 'switch' }, 'Have an account? ',
        h('button', { type: 'button', class: 'link-button', text: 'Log in', on: { click: () => show('login') } }));
    }
    if (!isRegister && info.registrationOpen) {
      return h('p', { class: 'switch' }, 'New here? ',
        h('button', { type: 'button', class: 'link-button', text: 'Create an account', on: { click: () => show('register') } }));
    }
    return null;
  }
}

function showError(el, message) {
  el.textContent = message;
  el.hidden = false;
}
