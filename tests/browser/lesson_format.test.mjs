// The lesson format (www/lesson-format.js, docs/lessons.md; issue 19), in Node without a browser:
// every built-in lesson validates and is listed with its title; an instructor's lesson survives
// its link; bad lessons are refused with a message naming the field and the limit. (Each step's
// quantization config is checked against Rust's QuantConfig and the pre-run check in
// tests/lessons.rs; running lessons in the page: tests/browser/lessons.test.mjs.)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { BUILT_IN, LIMITS, lessonFromLocation, lessonHash, parseLesson, splitLessonHash, stepHash, validateLesson } from '../../www/lesson-format.js';
import { parseHash } from '../../www/state.js';
import { ROOT } from './harness.mjs';

const DIR = path.join(ROOT, 'www/lessons');
const files = readdirSync(DIR).filter((f) => f.endsWith('.json')).sort();
const read = (f) => readFileSync(path.join(DIR, f), 'utf8');

test('every built-in lesson validates and the menu lists each file with its title', () => {
  assert.deepEqual(files.map((f) => f.replace(/\.json$/, '')), BUILT_IN.map((l) => l.id).sort());
  for (const f of files) {
    const p = parseLesson(read(f));
    assert.equal(p.error, undefined, `${f}: ${p.error}`);
    assert.equal(p.lesson.title, BUILT_IN.find((l) => `${l.id}.json` === f).title, f);
    // Every step with a question offers a choice the lesson expects, and every step's link is a
    // share link whose q part carries the step's config unchanged.
    for (const st of p.lesson.steps) {
      const s = parseHash(stepHash(st)).state;
      const q = JSON.parse(Buffer.from(s.q.split('.')[1], 'base64url').toString('utf8'));
      assert.deepEqual(q, st.setup.q, f);
      assert.equal(s.ctx, st.setup.ctx ?? '256', f);
    }
    assert.ok(p.lesson.steps.some((st) => st.predict), `${f} asks for a prediction`);
  }
});

test('an instructor\'s lesson survives its link; ?lesson= names only built-in lessons', () => {
  const lesson = JSON.parse(read('bits.json'));
  lesson.title = 'Ma leçon: bits et perplexité';
  const got = lessonFromLocation('', lessonHash(lesson));
  assert.deepEqual(got.lesson, lesson);
  assert.deepEqual(lessonFromLocation('?lesson=groups', ''), { builtIn: 'groups' });
  assert.equal(lessonFromLocation('', '#ql=1'), null);
  assert.match(lessonFromLocation('?lesson=../etc', '').error, /no built-in lesson "\.\.\/etc" \(lessons: one-row, bits/);
  assert.match(lessonFromLocation('', '#lesson=a%b').error, /not base64url/);
  assert.match(lessonFromLocation('', `#lesson=${'A'.repeat(LIMITS.link + 1)}`).error, /16385 characters long, more than the 16384/);
});

test('an open lesson keeps its place before the share link the page writes after a run', () => {
  const lesson = JSON.parse(read('groups.json'));
  const link = lessonHash(lesson).slice('#lesson='.length);
  const share = stepHash(lesson.steps[1], 'default');
  const both = `#lesson=${link}&${share.slice(1)}`;
  assert.deepEqual(splitLessonHash(both), { link, rest: share });
  assert.deepEqual(splitLessonHash(`#lesson=${link}`), { link, rest: '' });
  assert.deepEqual(splitLessonHash(share), { link: null, rest: share });
  const got = lessonFromLocation('', both);
  assert.deepEqual(got.lesson, lesson);
  assert.equal(got.link, link);
  assert.equal(parseHash(splitLessonHash(both).rest).state.q, parseHash(share).state.q);
});

// A bad lesson: the change to a valid one, and what its message must say (field and limit).
const BAD = [
  [(l) => { l.colour = 'red'; }, /lesson\.colour is not a lesson field \(lesson takes lesson, title, intro, model, steps\)/],
  [(l) => { l.lesson = 2; }, /lesson\.lesson must be the lesson format version 1 \(this lesson was written for a newer QuantLab/],
  [(l) => { l.title = 'x'.repeat(121); }, /lesson\.title is 121 characters long, more than the 120 allowed/],
  [(l) => { l.steps = []; }, /lesson\.steps has 0 entries; a lesson allows 1 to 12/],
  [(l) => { l.steps = Array(13).fill(l.steps[0]); }, /lesson\.steps has 13 entries; a lesson allows 1 to 12/],
  [(l) => { l.steps[1].text = 'y'.repeat(701); }, /steps\[1\]\.text is 701 characters long, more than the 700 allowed/],
  [(l) => { l.steps[1].onclick = 'alert(1)'; }, /steps\[1\]\.onclick is not a lesson field/],
  [(l) => { l.steps[1].setup.ctx = '100'; }, /steps\[1\]\.setup is refused as a share link: "ctx" is "100"; expected one of 64, 128, 256, 512/],
  [(l) => { l.steps[1].setup.calib = '9999x9999'; }, /steps\[1\]\.setup\.calib is 9999x9999; a lesson step calibrates on at most 64 sequences of 512 tokens/],
  [(l) => { l.steps[1].setup.calib = '16x1'; }, /steps\[1\]\.setup is refused as a share link: "calib" is "16x1"/],
  [(l) => { l.steps[1].setup.q = 'v1.abc'; }, /steps\[1\]\.setup\.q must be a quantization config/],
  [(l) => { l.steps[1].setup.q.overrides = Array(400).fill({ pattern: 'blk.*.ffn_down.weight', quant: null }); }, /steps\[1\]\.setup\.q is \d+ characters of JSON, more than the 4000 allowed/],
  [(l) => { l.steps[1].show = 'body'; }, /steps\[1\]\.show must name the part of the page that answers the step, one of ppl, kl/],
  [(l) => { l.steps[1].then = 'save-gguf'; }, /steps\[1\]\.then must be one of underflow, tender/],
  [(l) => { l.steps[1].predict.choices = ['only one']; }, /steps\[1\]\.predict\.choices has 1 entries; a lesson allows 2 to 5/],
  [(l) => { l.steps[1].predict.expected = 3; }, /steps\[1\]\.predict\.expected must be the index of a choice, 0 to 2/],
  [(l) => { l.steps[1].predict.hint = 'no'; }, /steps\[1\]\.predict\.hint is not a lesson field/],
  [(l) => { l.steps[1].row = { tensor: 'blk.0.attn_q.weight', row: -1 }; }, /steps\[1\]\.row\.row must be a whole number from 0 to 1000000/],
  [(l) => { l.model = 'javascript:alert(1)'; }, /lesson\.model must be "default", a Hub id like org\/name, or an http\(s\) URL/],
];

test('bad lessons are refused with the field and the limit', () => {
  for (const [change, want] of BAD) {
    const l = JSON.parse(read('bits.json'));
    change(l);
    const r = validateLesson(l);
    assert.equal(r.lesson, undefined, `accepted: ${want}`);
    assert.match(r.error, want);
    assert.match(r.error, /^This lesson is not valid: /);
  }
  assert.match(parseLesson('{"lesson": 1,').error, /^This lesson is not JSON: /);
  assert.match(parseLesson(' '.repeat(LIMITS.link + 1)).error, /more than the 16384 a lesson may have/);
  assert.match(validateLesson([]).error, /lesson must be an object/);
});
