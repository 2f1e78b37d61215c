// The guided lessons' panel (issue 19; the format: www/lesson-format.js, docs/lessons.md). A
// lesson drives the real page: each step's configuration goes through the share-link path (the
// page's `runLink` hook), its prediction is asked before the result, and the part of the page
// that answers it gets the class `lesson-target` and is scrolled into view. Every lesson text is
// set as textContent: an instructor's lesson is untrusted text.

import { ACTIONS, BUILT_IN, TARGETS, lessonFromLocation, parseLesson, splitLessonHash, stepHash } from './lesson-format.js';

const $ = (id) => document.getElementById(id);

// The open instructor's lesson's link text (base64url), or null: kept in the address's hash.
let openLink = null;

// The hash main.js writes (`h`: the share link of the configuration on screen, `#ql=1&…`) with
// the open instructor's lesson before it, so that a reload reopens the lesson (a built-in
// lesson stays in the query as `?lesson=ID`).
export function keepLesson(h) {
  if (openLink === null) return h;
  return h ? `#lesson=${openLink}&${h.replace(/^#/, '')}` : `#lesson=${openLink}`;
}

// `page`: the hooks main.js gives: ready (a promise: model and schema loaded), checkLink(hash)
// and runLink(hash) (→ {error} or {ok}), modelRef() and showRow(tensor, row).
export function initLessons(page) {
  const el = {
    panel: $('lesson-panel'), title: $('lesson-title'), progress: $('lesson-progress'), text: $('lesson-text'),
    predict: $('lesson-predict'), question: $('lesson-question'), choices: $('lesson-choices'),
    status: $('lesson-status'), explain: $('lesson-explain'), back: $('lesson-back'), run: $('lesson-run'),
    next: $('lesson-next'), close: $('lesson-close'), menu: $('lesson-menu'), menuError: $('lesson-error'),
  };
  for (const l of BUILT_IN) el.menu.add(new Option(l.title, l.id));
  let lesson = null;
  let model = 'default';
  let index = 0;
  let target = null;

  const fail = (message) => {
    el.menuError.textContent = message;
    el.menuError.dataset.failed = 'true';
  };
  const point = (key) => {
    target?.classList.remove('lesson-target');
    target = key ? $(TARGETS[key]) : null;
    if (!target) return;
    target.classList.add('lesson-target');
    target.scrollIntoView({ block: 'start', behavior: 'smooth' });
  };
  const chosen = () => el.choices.querySelector('input:checked');

  function showStep(i) {
    index = i;
    const st = lesson.steps[i];
    point(null);
    el.panel.dataset.step = String(i);
    el.panel.dataset.state = 'asking';
    el.progress.textContent = `Step ${i + 1} of ${lesson.steps.length}`;
    el.text.textContent = st.text;
    el.explain.textContent = '';
    el.status.textContent = '';
    el.predict.hidden = !st.predict;
    el.choices.replaceChildren();
    if (st.predict) {
      el.question.textContent = st.predict.question;
      st.predict.choices.forEach((c, j) => {
        const input = document.createElement('input');
        input.type = 'radio';
        input.name = 'lesson-choice';
        input.value = String(j);
        input.addEventListener('change', () => { el.run.disabled = false; });
        const label = document.createElement('label');
        label.append(input, document.createTextNode(` ${c}`));
        el.choices.append(label);
      });
    }
    el.run.textContent = st.predict ? 'Check my prediction' : 'Show me';
    el.run.disabled = Boolean(st.predict);
    el.back.disabled = i === 0;
    el.next.disabled = true;
    el.next.textContent = i === lesson.steps.length - 1 ? 'Finish' : 'Next';
  }

  async function answer() {
    const st = lesson.steps[index];
    const mine = index;
    el.run.disabled = true;
    el.panel.dataset.state = 'running';
    el.status.textContent = 'Running this step’s configuration…';
    const r = await page.runLink(stepHash(st, model));
    if (mine !== index || !lesson) return;
    if (r.error) {
      el.panel.dataset.state = 'error';
      el.status.textContent = `This step could not run: ${r.error}`;
      el.run.disabled = false;
      return;
    }
    if (st.row) page.showRow(st.row.tensor, st.row.row);
    if (st.then) $(ACTIONS[st.then])?.click();
    const pick = chosen();
    const words = [];
    if (st.predict && pick) {
      const j = Number(pick.value);
      words.push(`You predicted: ${st.predict.choices[j]}.`);
      if (st.predict.expected !== undefined) {
        words.push(j === st.predict.expected ? 'That is what the lesson expected.'
          : `The lesson expected: ${st.predict.choices[st.predict.expected]}.`);
      }
    }
    el.status.textContent = words.join(' ');
    el.explain.textContent = st.explain ?? '';
    el.panel.dataset.state = 'answered';
    el.next.disabled = false;
    point(st.show);
    if (!self.quantlabFirstLessonAnswer) self.quantlabFirstLessonAnswer = performance.now();
  }

  // Open a lesson: checked whole (format here, every step's link against the model) before its
  // first step shows.
  async function open(v, how) {
    el.menuError.textContent = '';
    delete el.menuError.dataset.failed;
    model = v.model ?? page.modelRef();
    await page.ready;
    for (let i = 0; i < v.steps.length; i += 1) {
      const c = await page.checkLink(stepHash(v.steps[i], model));
      if (c.error) return fail(`This lesson's step ${i + 1} cannot run on this model: ${c.error}`);
    }
    lesson = v;
    el.panel.hidden = false;
    el.panel.dataset.lesson = how;
    document.body.classList.add('in-lesson');
    el.title.textContent = v.title;
    showStep(0);
    el.text.textContent = v.intro ? `${v.intro} ${v.steps[0].text}` : v.steps[0].text;
    el.panel.focus();
  }
  async function openBuiltIn(id) {
    let text;
    try {
      const res = await fetch(new URL(`./lessons/${id}.json`, import.meta.url));
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      text = await res.text();
    } catch (e) {
      return fail(`The lesson "${id}" could not be fetched (${e.message}).`);
    }
    const p = parseLesson(text);
    if (p.error) return fail(p.error);
    el.menu.value = id;
    return open(p.lesson, id);
  }
  // The open lesson in the address: a built-in one's id in the query (`?lesson=ID`), an
  // instructor's link before the hash's share link (keepLesson); both gone when none is open.
  function address(builtIn, link) {
    openLink = link;
    const u = new URL(self.location.href);
    if (builtIn === null) u.searchParams.delete('lesson');
    else u.searchParams.set('lesson', builtIn);
    u.hash = keepLesson(splitLessonHash(u.hash).rest);
    history.replaceState(null, '', u);
  }
  function close() {
    lesson = null;
    point(null);
    el.panel.hidden = true;
    document.body.classList.remove('in-lesson');
    el.menu.value = '';
    address(null, null);
  }

  el.run.addEventListener('click', answer);
  el.back.addEventListener('click', () => { if (index > 0) showStep(index - 1); });
  el.next.addEventListener('click', () => {
    if (index + 1 < lesson.steps.length) showStep(index + 1);
    else {
      el.panel.dataset.state = 'finished';
      el.status.textContent = 'End of the lesson. The runs table keeps every step’s numbers.';
      el.next.disabled = true;
    }
  });
  el.close.addEventListener('click', close);
  el.menu.addEventListener('change', () => {
    if (!el.menu.value) return close();
    address(el.menu.value, null);
    return openBuiltIn(el.menu.value);
  });

  // The address: a built-in lesson (`?lesson=ID`) or an instructor's (`#lesson=…`). Returns
  // {held}: whether one was asked for (then the page does not start its own first run), and the
  // model an instructor's lesson names (else null).
  const asked = lessonFromLocation(self.location.search, self.location.hash);
  if (!asked) return { held: false, model: null };
  if (asked.error) {
    fail(asked.error);
    return { held: false, model: null };
  }
  if (asked.builtIn) openBuiltIn(asked.builtIn);
  else {
    address(null, asked.link);
    open(asked.lesson, 'link');
  }
  return { held: true, model: asked.lesson?.model ?? null };
}
