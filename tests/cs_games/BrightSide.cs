// A C# test game with camera pixels (protocol 2): BrightSide (tests/image_test_envs.py) in Mono.
// A 16x16 RGB uint8 frame (HWC) with a bright 6x6 patch on its left or right half; action 0 says left,
// 1 right; reward 1 for the right answer; episodes of 8 frames. Only the pixels tell the side.
//   mcs -out:bright.exe exports/csharp/AgentKitBridge.cs tests/cs_games/BrightSide.cs
//   mono bright.exe --port=P --instance=I [--dict=1] [--protocol=1]
// --dict=1: the frame in a Dict beside the step as a fraction (float32 [1]) and the step count (int32 [1]).
// --protocol=1: a version 1 game (the frame as float32 numbers 0..255).
using System;
using System.Collections.Generic;
using AgentKit.Bridge;

sealed class BrightSide : IBridgeGame
{
    const int Size = 16, Episode = 8;
    readonly bool dict, bytes;
    Random rng = new Random(0);
    int t, side;

    BrightSide(bool dict, bool bytes) { this.dict = dict; this.bytes = bytes; }

    void Frame(StepBuffers r)
    {
        int at = dict ? r.Offset(0, "frame") : r.Offset(0);
        side = rng.Next(2);
        int col = side == 0 ? 1 : Size / 2 + 1, row = rng.Next(Size - 6);
        for (int y = 0; y < Size; y++)
            for (int x = 0; x < Size; x++)
                for (int k = 0; k < 3; k++)
                {
                    bool patch = y >= row && y < row + 6 && x >= col && x < col + 6;
                    int v = patch ? 250 : rng.Next(60), i = at + (y * Size + x) * 3 + k;
                    if (bytes) r.ObsUint8[i] = (byte)v; else r.Obs[i] = v;
                }
        if (dict)
        {
            r.Obs[r.Offset(0, "t")] = t / (float)Episode;
            r.ObsInt32[r.Offset(0, "count")] = t;
        }
        r.Alive[0] = 1;
    }

    public void Reset(int? seed, IDictionary<string, object> parameters, StepBuffers r)
    {
        if (seed.HasValue) rng = new Random(seed.Value);
        t = 0;
        Frame(r);
    }

    public void Step(int[] actionInt, float[] actionFloat, StepBuffers r)
    {
        r.Reward[0] = actionInt[0] == side ? 1f : 0f;
        t++;
        r.Truncated[0] = (byte)(t >= Episode ? 1 : 0);
        Frame(r);
        r.Alive[0] = (byte)(t >= Episode ? 0 : 1);
    }

    static int Main(string[] args)
    {
        var settings = BridgeSettings.FromEnvironment(args);
        string v;
        bool dict = settings.Extra.TryGetValue("dict", out v) && v == "1";
        int protocol = settings.Extra.TryGetValue("protocol", out v) ? int.Parse(v) : BridgeClient.Protocol;
        var pixels = ObsSpec.Box(new[] { Size, Size, 3 }, protocol >= 2 ? "uint8" : "float32", 0f, 255f);
        var obs = dict ? ObsSpec.Dict(new[] { "frame", "t", "count" },
                                      new[] { pixels, ObsSpec.Box(new[] { 1 }, "float32", 0f, 1f),
                                              ObsSpec.Box(new[] { 1 }, "int32", 0f, Episode) })
                       : pixels;
        var agents = new[] { AgentSpec.Discrete("eye", obs, 2) };
        using (var client = new BridgeClient("bright-side-cs", agents, new BrightSide(dict, protocol >= 2)))
        {
            client.ProtocolVersion = protocol;
            client.Connect(settings);
            client.Run();
        }
        return 0;
    }
}
