/* cloudfilm viewer: wheel notches and swipes turned into slice steps, and taps told apart from drags.
   Pure logic on numbers (no DOM), used by viewer.js; plain JS, no build step.

   Wheel: a mouse notch arrives as one event of about 100 px (Chromium, Safari), 120 px (Windows at
   some scales) or 3 lines (Firefox): each such event is one slice. Touchpads and free-spinning wheels
   send many small deltas: they add up, one slice per NOTCH_PX, and the sum is forgotten after a pause
   or a change of direction.

   Swipe: the finger's travel maps to slices in proportion, one slice per TOUCH_STEP_PX, so a slow swipe
   steps one slice; released at speed (a fling), the series keeps running with the finger's velocity
   and slows down with an exponential decay, as native lists do. */
(function () {
  "use strict";
  const NOTCH_PX = 50;          // one wheel event at least this large is one notch
  const WHEEL_IDLE_MS = 300;    // small deltas further apart than this start a new sum
  const TOUCH_STEP_PX = 24;     // finger travel per slice
  const FLING_MIN = 0.4;        // px/ms at release to start a fling (a slow swipe is under 0.15)
  const FLING_MAX = 6;          // px/ms cap (synthetic or very fast swipes)
  const FLING_DECAY_MS = 325;   // velocity time constant
  const FLING_STOP = 0.05;      // px/ms below which the fling ends
  const VELOCITY_WINDOW_MS = 100;   // the moves that count for the velocity at release
  const HELD_MS = 60;               // no move for this long before lifting: no fling
  const TAP_MOVE_PX = 10, TAP_MS = 300, DOUBLE_TAP_MS = 320, DOUBLE_TAP_PX = 30;

  /** Slices for wheel events: steps(event) answers -1, 0 or +1 (or more for a large touchpad sum). */
  function WheelStepper() { this.sum = 0; this.at = 0; }
  WheelStepper.prototype.steps = function (deltaY, deltaMode, timeMs) {
    if (deltaMode === 1 || deltaMode === 2) return Math.sign(deltaY);   // lines or pages: one notch
    if (Math.abs(deltaY) >= NOTCH_PX) { this.sum = 0; return Math.sign(deltaY); }
    if (timeMs - this.at > WHEEL_IDLE_MS || Math.sign(deltaY) !== Math.sign(this.sum)) this.sum = 0;
    this.at = timeMs;
    this.sum += deltaY;
    const n = Math.trunc(this.sum / NOTCH_PX);
    this.sum -= n * NOTCH_PX;
    return n;
  };

  /** One finger on the image: travel → slices while it moves, velocity at release. */
  function Swipe(x, y, timeMs, stepPx) {
    this.x0 = x; this.y0 = y; this.t0 = timeMs; this.step = stepPx || TOUCH_STEP_PX;
    this.samples = [[timeMs, 0]];
    this.axis = null;
    this.moved = 0;
  }
  /** Slices from the start (signed) for the finger now at (x, y); down and right are forward. */
  Swipe.prototype.move = function (x, y, timeMs) {
    const dx = x - this.x0, dy = y - this.y0;
    this.moved = Math.max(this.moved, Math.hypot(dx, dy));
    if (!this.axis && this.moved >= TAP_MOVE_PX / 2) this.axis = Math.abs(dy) >= Math.abs(dx) ? "y" : "x";
    const along = this.axis === "x" ? dx : dy;
    this.samples.push([timeMs, along]);
    while (this.samples.length > 2 && timeMs - this.samples[0][0] > VELOCITY_WINDOW_MS) this.samples.shift();
    this.along = along;
    return Math.trunc(along / this.step);
  };
  /** Velocity (px/ms, signed) over the last moments of the swipe; 0 when the finger had stopped. */
  Swipe.prototype.velocity = function (timeMs) {
    const s = this.samples;
    if (s.length < 2) return 0;
    const last = s[s.length - 1], first = s[0];
    if (timeMs - last[0] > HELD_MS) return 0;   // held still before lifting
    const dt = Math.max(last[0] - first[0], 8);
    const v = (last[1] - first[1]) / dt;
    return Math.max(-FLING_MAX, Math.min(FLING_MAX, v));
  };
  Swipe.prototype.isTap = function (timeMs) { return this.moved < TAP_MOVE_PX && timeMs - this.t0 < TAP_MS; };

  /** The slices a fling still runs through: call frame(timeMs) per animation frame until it answers null. */
  function Fling(velocity, stepPx, timeMs) {
    this.v = velocity; this.step = stepPx || TOUCH_STEP_PX; this.t = timeMs; this.travel = 0; this.done = 0;
  }
  Fling.starts = function (velocity) { return Math.abs(velocity) >= FLING_MIN; };
  /** Whole slices to move now (signed), or null once the fling has died away. */
  Fling.prototype.frame = function (timeMs) {
    const dt = Math.max(0, timeMs - this.t);
    this.t = timeMs;
    const decay = Math.exp(-dt / FLING_DECAY_MS);
    this.travel += this.v * FLING_DECAY_MS * (1 - decay);   // exact integral of v·e^(-t/τ) over dt
    this.v *= decay;
    const total = Math.trunc(this.travel / this.step);
    const now = total - this.done;
    this.done = total;
    if (Math.abs(this.v) < FLING_STOP && now === 0) return null;
    return now;
  };

  /** Two quick taps close together. tap(x, y, timeMs) answers true on the second. */
  function DoubleTap() { this.last = null; }
  DoubleTap.prototype.tap = function (x, y, timeMs) {
    const l = this.last;
    if (l && timeMs - l[2] < DOUBLE_TAP_MS && Math.hypot(x - l[0], y - l[1]) < DOUBLE_TAP_PX) {
      this.last = null;
      return true;
    }
    this.last = [x, y, timeMs];
    return false;
  };

  window.cloudfilmGestures = { WheelStepper: WheelStepper, Swipe: Swipe, Fling: Fling, DoubleTap: DoubleTap,
    TOUCH_STEP_PX: TOUCH_STEP_PX };
})();
