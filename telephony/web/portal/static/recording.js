// The recording page: the timeline follows the player, and a click on a recorded
// stretch (or its row's button) seeks there. Without JavaScript the player and the
// table still work; this only joins them. Stretch offsets come from the call's clock;
// once the player knows the file's length they are scaled to it, so an engine that
// streamed faster or slower than real time still lands on the right second.
(function () {
  "use strict";
  var player = document.getElementById("player");
  var svg = document.getElementById("timeline");
  if (!player || !svg) { return; }
  var head = document.getElementById("playhead");
  var stretches = Array.prototype.slice.call(svg.querySelectorAll("rect.recorded"));
  var spans = stretches.map(function (rect, i) {
    var start = parseFloat(rect.getAttribute("data-audio-start"));
    var next = stretches[i + 1];
    return {
      rect: rect,
      start: start,
      x: parseFloat(rect.getAttribute("x")),
      width: parseFloat(rect.getAttribute("width")),
      end: next ? parseFloat(next.getAttribute("data-audio-start")) : null
    };
  });

  var last = stretches[stretches.length - 1];
  var clockTotal = last ? parseFloat(last.getAttribute("data-audio-start")) +
    parseFloat(last.getAttribute("data-audio-length")) : 0;

  function scale() {
    return (isFinite(player.duration) && clockTotal > 0) ? player.duration / clockTotal : 1;
  }

  function seek(seconds) {
    if (!isFinite(seconds)) { return; }
    player.currentTime = seconds * scale();
    var playing = player.play();
    if (playing && playing.catch) { playing.catch(function () {}); }
  }

  function place() {
    var t = player.currentTime / scale();
    for (var i = 0; i < spans.length; i++) {
      var s = spans[i];
      var end = s.end !== null ? s.end : clockTotal;
      if (t >= s.start && (t < end || i === spans.length - 1)) {
        var fraction = end > s.start ? Math.min((t - s.start) / (end - s.start), 1) : 0;
        head.setAttribute("x", String(s.x + fraction * s.width));
        return;
      }
    }
  }

  spans.forEach(function (s) {
    s.rect.addEventListener("click", function () { seek(s.start); });
  });
  Array.prototype.forEach.call(document.querySelectorAll("button.seek"), function (button) {
    button.addEventListener("click", function () {
      seek(parseFloat(button.getAttribute("data-audio-start")));
    });
  });
  player.addEventListener("timeupdate", place);
  player.addEventListener("seeked", place);
}());
