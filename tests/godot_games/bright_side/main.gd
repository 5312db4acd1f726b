# BrightSide (tests/image_test_envs.py) in Godot: a 16x16 RGB uint8 frame (HWC) with a bright 6x6 patch on its
# left or right half; action 0 says left, 1 right; reward 1 for the right answer; episodes of 8 frames.
# --dict=1: the frame in a Dict beside the step as a fraction (float32 [1]) and the step count (int32 [1]);
# --protocol=1: a version 1 game (the frame as float32 numbers 0..255).
extends Node

const Bridge = preload("res://addons/agentkit/bridge.gd")
const SIZE = 16
const EPISODE = 8

var bridge = Bridge.new()
var rng = RandomNumberGenerator.new()
var dict = false
var t = 0
var side = 0
var pixels = PoolByteArray()

func _ready():
	var s = {"port": OS.get_environment("AGENTKIT_BRIDGE_PORT"), "instance": OS.get_environment("AGENTKIT_BRIDGE_INSTANCE"),
		"dict": "0", "protocol": "2"}
	for arg in OS.get_cmdline_args():
		if arg.begins_with("--") and "=" in arg:
			var kv = arg.substr(2).split("=", true, 1)
			s[kv[0]] = kv[1]
	dict = s.dict == "1"
	bridge.protocol = int(s.protocol)
	var instance = null if s.instance == "" else int(s.instance)
	if bridge.start(self, "bright-side-godot", "127.0.0.1", int(s.port), instance) != OK:
		get_tree().quit(2)

func _process(_delta):
	if not bridge.poll(50):
		get_tree().quit()

func bridge_agents() -> Array:
	var frame = {"shape": [SIZE, SIZE, 3], "dtype": "uint8" if bridge.protocol >= 2 else "float32", "low": 0, "high": 255}
	var observation = frame
	if dict:
		observation = {"kind": "dict", "entries": [
			{"name": "frame", "shape": [SIZE, SIZE, 3], "dtype": "uint8"},
			{"name": "t", "shape": [1], "low": 0.0, "high": 1.0},
			{"name": "count", "shape": [1], "dtype": "int32", "low": 0, "high": EPISODE}]}
	return [{"name": "eye", "observation": observation, "action": {"kind": "discrete", "n": 2}, "mask": false}]

func _frame() -> void:
	pixels.resize(SIZE * SIZE * 3)
	side = rng.randi_range(0, 1)
	var col = 1 if side == 0 else SIZE / 2 + 1
	var row = rng.randi_range(0, SIZE - 7)
	for y in SIZE:
		for x in SIZE:
			var patch = y >= row and y < row + 6 and x >= col and x < col + 6
			for k in 3:
				pixels[(y * SIZE + x) * 3 + k] = 250 if patch else rng.randi_range(0, 59)

func _observe() -> Dictionary:
	if bridge.protocol < 2:
		var values = PoolRealArray()
		for v in pixels:
			values.append(float(v))
		return {"obs": values}
	if dict:
		return {"obs_uint8": pixels, "obs": PoolRealArray([float(t) / EPISODE]), "obs_int32": PoolIntArray([t])}
	return {"obs_uint8": pixels}

func bridge_reset(new_seed, _params: Dictionary) -> Dictionary:
	if new_seed != null:
		rng.seed = new_seed
	t = 0
	_frame()
	var r = _observe()
	r["alive"] = PoolByteArray([1])
	return r

func bridge_step(action_int: PoolIntArray, _action_float: PoolRealArray) -> Dictionary:
	var reward = 1.0 if action_int[0] == side else 0.0
	t += 1
	_frame()
	var r = _observe()
	var ended = t >= EPISODE
	r["reward"] = PoolRealArray([reward])
	r["terminated"] = PoolByteArray([0])
	r["truncated"] = PoolByteArray([1 if ended else 0])
	r["alive"] = PoolByteArray([0 if ended else 1])
	return r
