# One training area of the Maze scene: a maze (maze.gd) and the bridge client's three calls for it. The scene
# makes one area per instance it serves (`--instances=N`: N areas side by side) and hands them all to the client.
extends Reference

const Maze = preload("res://game/maze.gd")

var maze = Maze.new()

func _init(first_seed: int):
	maze.reset(first_seed)

func bridge_agents() -> Array:
	return [{
		"name": "walker",
		"observation": {"shape": [Maze.OBS_SIZE], "low": -1.0, "high": 1.0},
		"action": {"kind": "discrete", "n": 4},
		"mask": true,
	}]

func bridge_reset(new_seed, params: Dictionary) -> Dictionary:
	if params.has("max_steps"):
		maze.max_steps = int(params["max_steps"])
	maze.reset(new_seed)
	return {"obs": maze.observe(), "alive": PoolByteArray([1]), "mask": maze.mask()}

func bridge_step(action_int: PoolIntArray, _action_float: PoolRealArray) -> Dictionary:
	var r = maze.step(action_int[0])
	var ended = r[1] or r[2]
	return {
		"obs": maze.observe(),
		"reward": PoolRealArray([r[0]]),
		"terminated": PoolByteArray([1 if r[1] else 0]),
		"truncated": PoolByteArray([1 if r[2] else 0]),
		"alive": PoolByteArray([0 if ended else 1]),
		"mask": maze.mask(),
		"info": PoolRealArray([1.0 if r[1] else 0.0, maze.illegal_moves]),
		"info_keys": ["success", "illegal_moves"],
	}
