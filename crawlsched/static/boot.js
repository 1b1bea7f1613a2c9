// crawlsched web page: asks for the job list and the cards' strips as soon as the page
// starts, so that they come over the network while the styles and the other scripts load.
// scheduler.js and strip.js take these two answers for their first refresh instead of
// asking again (with a token kept for the tab, it is sent here as there).
(function () {
  "use strict";

  var ns = (window.crawlsched = window.crawlsched || {});
  if (ns.started) return; // the page's own scripts started first: they ask themselves
  var headers = { Accept: "application/json" };
  var token = null;
  try {
    token = window.sessionStorage.getItem("crawlsched.token");
  } catch (e) {
    token = null;
  }
  if (token) headers.Authorization = "Bearer " + token;
  var init = { headers: headers, credentials: "same-origin", cache: "no-store" };
  function ask(path) {
    var answer = fetch(path, init);
    answer.catch(function () {
      /* the page's refresh reports an unreachable scheduler */
    });
    return answer;
  }
  ns.early = { token: token, jobs: ask("/api/scheduler/jobs"), recent: ask("/api/scheduler/recent") };
})();
