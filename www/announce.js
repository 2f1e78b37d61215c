// The result read out (issue 19, item 4): a status region in the result panel says each finished
// run's perplexity and bits per weight, so a screen reader announces the answer to a change made
// from the keyboard without moving the focus. It copies the panel's own text (main.js fills
// #ppl and #bpw) when the panel's run is done; textContent only.

export function initAnnounce() {
  const $ = (id) => document.getElementById(id);
  const result = $('result');
  const said = $('result-said');
  const sayIt = () => {
    if (result.dataset.state !== 'done' || said.dataset.run === result.dataset.run) return;
    said.dataset.run = result.dataset.run;
    said.textContent = `Result: perplexity ${$('ppl').textContent}; bits per weight ${$('bpw').textContent}.`;
  };
  new MutationObserver(sayIt).observe(result, { attributes: true, attributeFilter: ['data-state', 'data-run'] });
}
