// Moving-v0 in JavaScript: a port of envs/games/moving.py (agentkit/Moving-v0), trained over the bridge.
//
//   node exports/js/games/moving.mjs --port 11008            # connect to a trainer that listens there
//   (examples/bridge-moving-node.yaml launches it with --port {port} --instance {instance})
//   node exports/js/games/moving.mjs --instances 8           # 8 games in this process, one connection
//   (what env.instances_per_process: 8 launches)
//
// Drive a vehicle into a target circle and stop there, with hybrid actions: accelerate(magnitude),
// turn(angle), brake(). Same physics, reward, observation and bounds as the Python game; only the random
// generator differs (mulberry32 seeded at reset instead of numpy's PCG64), so episodes are drawn from the
// same distribution, not the same sequence.

import { agent, hybrid, parseArgs, seededRandom, serveMany } from "../agentkit-bridge.mjs";

export const ACCELERATE = 0;
export const TURN = 1;
export const BRAKE = 2;

export class Moving {
  constructor({ maxSteps = 200, targetRadius = 0.1, maxAcceleration = 0.5, maxSpeed = 1.0, maxTurn = Math.PI / 2,
    brakeValue = 0.5, dt = 0.1, stepPenalty = 0.001, goalBonus = 1.0 } = {}) {
    Object.assign(this, { maxSteps, targetRadius, maxAcceleration, maxSpeed, maxTurn, brakeValue, dt, stepPenalty, goalBonus });
    this.rng = seededRandom(0);
    const diag = 2 * Math.sqrt(2);
    this.spec = agent("car", [9], hybrid(
      { accelerate: ["magnitude"], turn: ["angle"], brake: [] },
      { magnitude: [0, 1], angle: [-maxTurn, maxTurn] },
    ), { low: [-1, -1, 0, -1, -1, -1, -1, 0, 0], high: [1, 1, maxSpeed, 1, 1, 1, 1, diag, 1] });
  }

  uniform(lo, hi) { return lo + (hi - lo) * this.rng(); }

  distance() { return Math.hypot(this.tx - this.x, this.ty - this.y); }

  obs() {
    const dx = this.tx - this.x;
    const dy = this.ty - this.y;
    return [this.x, this.y, this.speed, Math.cos(this.heading), Math.sin(this.heading), this.tx, this.ty,
      Math.hypot(dx, dy), this.steps / this.maxSteps];
  }

  reset(seed) {
    if (seed != null) this.rng = seededRandom(seed);
    const lim = 1 - this.targetRadius;
    this.tx = this.uniform(-lim, lim);
    this.ty = this.uniform(-lim, lim);
    this.x = this.uniform(-1, 1);
    this.y = this.uniform(-1, 1);
    this.heading = this.uniform(0, 2 * Math.PI);
    this.speed = 0;
    this.steps = 0;
    return this.obs();
  }

  /** One step with `action` = { type, params: [magnitude, angle] }; returns [obs, reward, terminated, truncated, info]. */
  step({ type, params }) {
    if (type === ACCELERATE) {
      const magnitude = Math.min(Math.max(params[0], 0), 1);
      this.speed = Math.min(this.speed + magnitude * this.maxAcceleration, this.maxSpeed);
    } else if (type === TURN) {
      const angle = Math.min(Math.max(params[1], -this.maxTurn), this.maxTurn);
      this.heading = ((this.heading + angle) % (2 * Math.PI) + 2 * Math.PI) % (2 * Math.PI);
    } else if (type === BRAKE) {
      this.speed = Math.max(this.speed - this.brakeValue, 0);
    } else {
      throw new Error(`Moving: action type must be 0, 1 or 2, got ${type}`);
    }
    const before = this.distance();
    let x = this.x + this.dt * this.speed * Math.cos(this.heading);
    let y = this.y + this.dt * this.speed * Math.sin(this.heading);
    if (Math.abs(x) > 1 || Math.abs(y) > 1) { // the wall stops the vehicle
      x = Math.min(Math.max(x, -1), 1);
      y = Math.min(Math.max(y, -1), 1);
      this.speed = 0;
    }
    this.x = x;
    this.y = y;
    this.steps += 1;
    const after = this.distance();
    let reward = before - after - this.stepPenalty;
    const success = type === BRAKE && this.speed === 0 && after <= this.targetRadius;
    if (success) reward += this.goalBonus;
    const truncated = !success && this.steps >= this.maxSteps;
    return [this.obs(), reward, success, truncated, { distance: after, success: success ? 1 : 0 }];
  }
}

/** The bridge's view of one Moving game: one agent, `car`. */
export function bridged(game) {
  return {
    reset(seed) { return { obs: [game.reset(seed)] }; },
    step([action]) {
      const [obs, reward, terminated, truncated, info] = game.step(action);
      return { obs: [obs], reward: [reward], terminated: [terminated], truncated: [truncated],
        info: { distance: [info.distance], success: [info.success] } };
    },
  };
}

if (typeof process !== "undefined" && import.meta.url === `file://${process.argv[1]}`) {  // a page has no process
  const args = parseArgs();
  const games = Array.from({ length: args.instances }, () => new Moving()); // --instances N: N on one connection
  await serveMany(games.map(bridged), { name: "moving-js", agents: [games[0].spec], host: args.host,
    port: args.port, transport: args.transport, instance: args.instance, token: args.token, connectTimeoutMs: args.connectTimeoutMs });
}
