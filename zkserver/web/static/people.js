/* zkserver live monitor: the People view: the person registry, kept in step on every terminal.
 *
 * Search, add and edit a person (their terminals: every one, or those chosen), see on which
 * terminals they are in step, pending or failed and why, remove them everywhere after one
 * confirmation. Live from the stream's user_sync events (operation upsert/delete).
 * API: GET/POST /api/persons, PATCH/DELETE /api/persons/{pin}, GET .../sync.
 * Also the registry's names, for punches whose terminal sends none (personName).
 */

import { state, toast } from './state.js';
import { api, AuthError } from './api.js';
import { handleError, showLogin } from './session.js';

const $ = (id) => document.getElementById(id);

const view = {
  section: $('people-section'), list: $('people'), empty: $('people-empty'),
  count: $('people-count'), search: $('people-search'), q: $('people-q'),
  add: $('person-add'), more: $('people-more'),
  form: $('person-form'), formTitle: $('person-form-title'), formError: $('person-form-error'),
  save: $('person-save'), cancel: $('person-cancel'), deviceList: $('pf-device-list'),
  active: $('pf-active'), tpl: $('tpl-person'),
};

const STATE_LABELS = { in_step: 'In step', pending: 'Pending', failed: 'Failed' };
const FIELDS = ['user_id', 'name', 'card', 'privilege', 'password', 'group'];
const PAGE = 100;

const people = {
  rows: new Map(),      // user_id -> person JSON
  sync: new Map(),      // user_id -> [{device_id, state, detail, operation, ...}]
  names: new Map(),     // user_id -> name (the registry's, for the feed)
  cursor: null,
  editing: null,        // user_id being edited, or '' when adding
  loaded: false,
};

export function personName(userId) {
  return people.names.get(String(userId)) || '';
}

const asked = new Set(); // PINs looked up in the registry once (found or not)

// A punch without a name: ask the registry once for that PIN.
export function lookupPerson(userId) {
  const pin = String(userId);
  if (people.names.has(pin) || asked.has(pin) || !/^[A-Za-z0-9]{1,24}$/.test(pin)) return;
  asked.add(pin);
  // A search (always 200), not GET /api/persons/{pin}: a PIN that is not in the registry
  // must not show up as a failed request.
  api(`/api/persons?${new URLSearchParams({ q: pin, limit: '20' })}`)
    .then((page) => {
      const person = page.items.find((p) => p.user_id === pin);
      if (!person) return;
      people.names.set(person.user_id, person.name);
      document.dispatchEvent(new CustomEvent('zk-person-names'));
    })
    .catch(() => { /* not reachable now; the name stays unknown */ });
}

function field(name) { return $(`pf-${name}`); }

function deviceName(id) {
  const device = state.devices.get(id);
  return device ? (device.name || device.serial_number || id) : id;
}

// --- loading ------------------------------------------------------------------------------
export async function loadPeople(more = false) {
  const query = new URLSearchParams({ limit: String(PAGE) });
  const q = view.q.value.trim();
  if (q) query.set('q', q);
  if (more && people.cursor) query.set('cursor', people.cursor);
  try {
    const page = await api(`/api/persons?${query}`);
    if (!more) people.rows.clear();
    for (const person of page.items) {
      people.rows.set(person.user_id, person);
      people.names.set(person.user_id, person.name);
    }
    people.cursor = page.next_cursor;
    people.loaded = true;
    render();
    await Promise.all(page.items.map((p) => loadSync(p.user_id)));
    document.dispatchEvent(new CustomEvent('zk-person-names'));
  } catch (err) {
    handleError(err, 'Loading people failed');
  }
}

async function loadSync(userId) {
  try {
    const answer = await api(`/api/persons/${encodeURIComponent(userId)}/sync`);
    people.sync.set(userId, answer.devices);
    paintSync(userId);
  } catch (err) {
    if (err instanceof AuthError) showLogin();
  }
}

// The stream: a person's state on a device changed.
export function personSync(event) {
  if (!event.user_id || !event.operation || event.operation === 'upload') return;
  const entries = people.sync.get(event.user_id) || [];
  const at = entries.findIndex((e) => e.device_id === event.device_id);
  const entry = {
    device_id: event.device_id, operation: event.operation, state: event.state,
    detail: event.detail || '', command_ids: event.command_ids || [],
    device_name: event.device_name, serial_number: event.serial_number,
  };
  if (at >= 0) entries[at] = entry; else entries.push(entry);
  people.sync.set(event.user_id, entries);
  if (people.rows.has(event.user_id)) paintSync(event.user_id);
  else if (event.operation === 'upsert' && people.loaded) loadOne(event.user_id);
}

async function loadOne(userId) {
  try {
    const person = await api(`/api/persons/${encodeURIComponent(userId)}`);
    people.rows.set(person.user_id, person);
    people.names.set(person.user_id, person.name);
    render();
  } catch (_) { /* removed meanwhile */ }
}

// --- the list -----------------------------------------------------------------------------
function summary(userId, person) {
  const entries = (people.sync.get(userId) || []).filter((e) => e.operation !== 'delete');
  if (!person.active) return ['Inactive', ''];
  if (!entries.length) return ['Not on a terminal yet', ''];
  const by = { in_step: 0, pending: 0, failed: 0 };
  for (const e of entries) by[e.state] = (by[e.state] || 0) + 1;
  const worst = by.failed ? 'failed' : by.pending ? 'pending' : 'in_step';
  const parts = [];
  if (by.in_step) parts.push(`In step on ${by.in_step}`);
  if (by.pending) parts.push(`${by.pending} pending`);
  if (by.failed) parts.push(`${by.failed} failed`);
  return [parts.join(' · '), worst];
}

function render() {
  const existing = new Map([...view.list.children].map((n) => [n.dataset.userId, n]));
  const nodes = [...people.rows.values()]
    .sort((a, b) => a.user_id.localeCompare(b.user_id, undefined, { numeric: true }))
    .map((person) => {
      const node = existing.get(person.user_id) || build(person.user_id);
      paint(node, person);
      return node;
    });
  const focused = document.activeElement;
  view.list.replaceChildren(...nodes);
  if (focused && view.list.contains(focused)) focused.focus();
  view.empty.hidden = nodes.length > 0;
  view.more.hidden = !people.cursor;
  view.count.textContent = nodes.length ? `${nodes.length}${people.cursor ? '+' : ''} shown` : '';
}

function build(userId) {
  const node = view.tpl.content.firstElementChild.cloneNode(true);
  node.dataset.userId = userId;
  node.querySelector('.person-edit').addEventListener('click', () => openForm(userId));
  const remove = node.querySelector('.person-remove');
  const ask = node.querySelector('.person-confirm');
  remove.addEventListener('click', () => {
    ask.hidden = false;
    remove.setAttribute('aria-expanded', 'true');
    ask.querySelector('.confirm-no').focus();
  });
  ask.querySelector('.confirm-no').addEventListener('click', () => {
    ask.hidden = true;
    remove.setAttribute('aria-expanded', 'false');
    remove.focus();
  });
  ask.querySelector('.confirm-yes').addEventListener('click', () => removePerson(userId, node));
  return node;
}

function paint(node, person) {
  const name = person.name || `User ${person.user_id}`;
  node.querySelector('.person-name').textContent = name;
  const where = person.devices === 'all'
    ? 'every terminal'
    : (person.devices.map(deviceName).join(', ') || 'no terminal');
  const bits = [`PIN ${person.user_id}`];
  if (person.card) bits.push(`card ${person.card}`);
  bits.push(where);
  node.querySelector('.person-sub').textContent = bits.join(' · ');
  node.dataset.active = String(person.active);
  node.querySelector('.person-edit').setAttribute('aria-label', `Edit ${name}`);
  node.querySelector('.person-remove').setAttribute('aria-label', `Remove ${name}…`);
  node.querySelector('.person-confirm').setAttribute('aria-label', `Confirm removing ${name}`);
  node.querySelector('.person-confirm .confirm-text').textContent =
    `Remove ${name} (PIN ${person.user_id}) from the registry and from every terminal?`;
  paintSyncNode(node, person.user_id, person);
}

function paintSync(userId) {
  const node = view.list.querySelector(`li[data-user-id="${CSS.escape(userId)}"]`);
  const person = people.rows.get(userId);
  if (node && person) paintSyncNode(node, userId, person);
}

function paintSyncNode(node, userId, person) {
  const [text, worst] = summary(userId, person);
  node.dataset.state = worst;
  node.querySelector('.sync-summary').textContent = text;
  const entries = people.sync.get(userId) || [];
  const items = entries.map((e) => {
    const li = document.createElement('li');
    li.className = 'sync-entry';
    li.dataset.state = e.state;
    li.dataset.deviceId = e.device_id;
    li.dataset.operation = e.operation;
    const who = document.createElement('span');
    who.className = 'sync-device';
    who.textContent = e.device_name || deviceName(e.device_id);
    const what = document.createElement('span');
    what.className = 'sync-state';
    const label = STATE_LABELS[e.state] || e.state;
    what.textContent = e.operation === 'delete' ? `${label} (removal)` : label;
    li.append(who, what);
    if (e.detail) {
      const detail = document.createElement('span');
      detail.className = 'sync-detail';
      detail.textContent = e.detail;
      li.append(detail);
    }
    return li;
  });
  node.querySelector('.sync-list').replaceChildren(...items);
  node.querySelector('.person-sync').hidden = items.length === 0;
}

async function removePerson(userId, node) {
  const person = people.rows.get(userId);
  try {
    await api(`/api/persons/${encodeURIComponent(userId)}`, { method: 'DELETE' });
    people.rows.delete(userId);
    people.names.delete(userId);
    render();
    toast(`${person ? person.name || userId : userId} is being removed from every terminal`);
    view.add.focus();
  } catch (err) {
    handleError(err, 'Removing failed');
    node.querySelector('.person-confirm').hidden = true;
  }
}

// --- the form -----------------------------------------------------------------------------
function deviceChoices(chosen) {
  const boxes = [...state.devices.values()]
    .filter((d) => d.approved && d.status !== 'rejected')
    .sort((a, b) => (a.name || '').localeCompare(b.name || ''))
    .map((device) => {
      const label = document.createElement('label');
      label.className = 'check';
      const box = document.createElement('input');
      box.type = 'checkbox';
      box.value = device.id;
      box.checked = chosen.includes(device.id);
      box.addEventListener('change', () => { mode('some'); });
      label.append(box, ` ${device.name || device.serial_number}`);
      return label;
    });
  view.deviceList.replaceChildren(...boxes);
}

function mode(value) {
  for (const radio of view.form.querySelectorAll('input[name="devices-mode"]')) {
    radio.checked = radio.value === value;
  }
}

function clearErrors() {
  view.formError.textContent = '';
  for (const name of [...FIELDS, 'devices']) {
    const input = field(name);
    if (input) input.removeAttribute('aria-invalid');
    const error = $(`pf-${name}-error`);
    if (error) error.textContent = '';
  }
}

function openForm(userId) {
  const person = userId ? people.rows.get(userId) : null;
  people.editing = person ? person.user_id : '';
  clearErrors();
  view.formTitle.textContent = person ? `Edit ${person.name || person.user_id}` : 'Add a person';
  field('user_id').value = person ? person.user_id : '';
  field('user_id').readOnly = Boolean(person);
  field('name').value = person ? person.name : '';
  field('card').value = person ? person.card : '';
  field('privilege').value = String(person ? person.privilege : 0);
  field('password').value = '';
  $('pf-password-hint').hidden = !(person && person.has_password);
  field('group').value = person ? person.group : '';
  view.active.checked = person ? person.active : true;
  const devices = person && person.devices !== 'all' ? person.devices : [];
  mode(person && person.devices !== 'all' ? 'some' : 'all');
  deviceChoices(devices);
  view.form.hidden = false;
  view.add.setAttribute('aria-expanded', 'true');
  (person ? field('name') : field('user_id')).focus();
}

function closeForm() {
  view.form.hidden = true;
  view.add.setAttribute('aria-expanded', 'false');
  const node = people.editing
    ? view.list.querySelector(`li[data-user-id="${CSS.escape(people.editing)}"] .person-edit`)
    : null;
  people.editing = null;
  (node || view.add).focus();
}

function formBody() {
  const body = {
    name: field('name').value.trim(),
    card: field('card').value.trim(),
    privilege: Number(field('privilege').value),
    group: field('group').value.trim(),
    active: view.active.checked,
  };
  const password = field('password').value;
  if (password || !people.editing) body.password = password;
  const some = view.form.querySelector('input[name="devices-mode"][value="some"]').checked;
  body.devices = some
    ? [...view.deviceList.querySelectorAll('input:checked')].map((b) => b.value)
    : 'all';
  if (!people.editing) body.user_id = field('user_id').value.trim();
  return body;
}

async function submit(event) {
  event.preventDefault();
  clearErrors();
  const body = formBody();
  if (!people.editing && !body.user_id) {
    showFieldError('user_id', 'Enter the PIN (1-24 letters or digits).');
    return;
  }
  view.save.disabled = true;
  try {
    const editing = people.editing;
    const response = await fetch(
      editing ? `/api/persons/${encodeURIComponent(editing)}` : '/api/persons',
      {
        method: editing ? 'PATCH' : 'POST',
        credentials: 'same-origin',
        cache: 'no-store',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify(body),
      },
    );
    if (response.status === 401) { showLogin('Your session has ended. Please sign in again.'); return; }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      if (answer.field) showFieldError(answer.field, answer.detail || answer.error);
      else view.formError.textContent = answer.detail || answer.error || `HTTP ${response.status}`;
      return;
    }
    people.rows.set(answer.user_id, answer);
    people.names.set(answer.user_id, answer.name);
    render();
    toast(`${answer.name || answer.user_id} saved; sending to the terminals`);
    closeForm();
    loadSync(answer.user_id);
  } catch (err) {
    view.formError.textContent = `Saving failed: ${err.message}`;
  } finally {
    view.save.disabled = false;
  }
}

function showFieldError(name, message) {
  const input = name === 'devices' ? view.deviceList.querySelector('input') : field(name);
  const error = $(`pf-${name}-error`);
  if (error) error.textContent = message;
  else view.formError.textContent = message;
  if (input) {
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  } else {
    view.formError.textContent = message;
  }
}

export function initPeople() {
  view.add.addEventListener('click', () => (view.form.hidden ? openForm(null) : closeForm()));
  view.cancel.addEventListener('click', closeForm);
  view.form.addEventListener('submit', submit);
  view.form.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') { event.preventDefault(); closeForm(); }
  });
  view.more.addEventListener('click', () => loadPeople(true));
  let timer = null;
  view.q.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => loadPeople(false), 250);
  });
  view.search.addEventListener('submit', (event) => { event.preventDefault(); loadPeople(false); });
}
