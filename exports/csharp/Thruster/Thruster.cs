// The Thruster game: steer a ship with two continuous thrusters into a target circle.
//
// Action: Box(2) in [-1, 1], thrust along x and y. Each step velocity = 0.8 velocity + 0.02 thrust, then the
// ship moves by its velocity; the walls of [-1, 1]^2 stop it. Observation, 7 floats: x, y, 10 vx, 10 vy,
// the target's offset dx, dy, and the elapsed fraction of the time limit. Reward: the distance gained this
// step - 0.005, +1 on entering the target circle (radius 0.1: terminated). Truncated after MaxSteps.
// Several ships (agents) may fly in one game instance, each in its own arena and episode.
// benchmarks/engines_games.py has the same game in Python (the in-process figure beside Mono's).
using System;
using System.Collections.Generic;
using AgentKit.Bridge;

namespace AgentKit.Games
{
    public sealed class Thruster : IBridgeGame
    {
        public const int ObsSize = 7;
        public const float Radius = 0.1f;
        public int MaxSteps = 100;

        readonly int ships;
        readonly float[] x, y, vx, vy, tx, ty;
        readonly int[] steps;
        Random rng = new Random(0);

        public Thruster(int ships)
        {
            this.ships = ships;
            x = new float[ships]; y = new float[ships]; vx = new float[ships]; vy = new float[ships];
            tx = new float[ships]; ty = new float[ships]; steps = new int[ships];
        }

        public AgentSpec[] Agents()
        {
            var agents = new AgentSpec[ships];
            for (int i = 0; i < ships; i++)
                agents[i] = AgentSpec.Box("ship" + i, ObsSize, 2, -1f, 1f, obsLow: -3f, obsHigh: 3f);
            return agents;
        }

        public void Reset(int? seed, IDictionary<string, object> parameters, StepBuffers result)
        {
            if (seed.HasValue) rng = new Random(seed.Value);
            object maxSteps;
            if (parameters.TryGetValue("max_steps", out maxSteps)) MaxSteps = Convert.ToInt32(maxSteps);
            result.SetInfoKeys("success");
            for (int i = 0; i < ships; i++)
            {
                x[i] = Uniform(1f); y[i] = Uniform(1f); vx[i] = vy[i] = 0f;
                tx[i] = Uniform(0.8f); ty[i] = Uniform(0.8f);
                steps[i] = 0;
                result.Alive[i] = 1;
                Observe(i, result);
            }
        }

        public void Step(int[] actionInt, float[] actionFloat, StepBuffers result)
        {
            for (int i = 0; i < ships; i++)
            {
                if (result.Alive[i] == 0) continue;   // finished this episode: waits for the others
                float before = Distance(i);
                vx[i] = 0.8f * vx[i] + 0.02f * Clamp(actionFloat[2 * i]);
                vy[i] = 0.8f * vy[i] + 0.02f * Clamp(actionFloat[2 * i + 1]);
                x[i] += vx[i]; y[i] += vy[i];
                if (Math.Abs(x[i]) > 1f) { x[i] = Math.Sign(x[i]); vx[i] = 0f; }
                if (Math.Abs(y[i]) > 1f) { y[i] = Math.Sign(y[i]); vy[i] = 0f; }
                steps[i]++;
                float after = Distance(i);
                bool reached = after <= Radius;
                result.Reward[i] = before - after - 0.005f + (reached ? 1f : 0f);
                result.Terminated[i] = (byte)(reached ? 1 : 0);
                result.Truncated[i] = (byte)(!reached && steps[i] >= MaxSteps ? 1 : 0);
                result.Alive[i] = (byte)(result.Terminated[i] == 1 || result.Truncated[i] == 1 ? 0 : 1);
                result.Info[i] = reached ? 1f : 0f;
                Observe(i, result);
            }
        }

        void Observe(int i, StepBuffers result)
        {
            int o = result.ObsOffset[i];
            result.Obs[o] = x[i]; result.Obs[o + 1] = y[i];
            result.Obs[o + 2] = 10f * vx[i]; result.Obs[o + 3] = 10f * vy[i];
            result.Obs[o + 4] = tx[i] - x[i]; result.Obs[o + 5] = ty[i] - y[i];
            result.Obs[o + 6] = (float)steps[i] / MaxSteps;
        }

        float Distance(int i)
        {
            float dx = tx[i] - x[i], dy = ty[i] - y[i];
            return (float)Math.Sqrt(dx * dx + dy * dy);
        }

        float Uniform(float limit) { return (float)(rng.NextDouble() * 2.0 - 1.0) * limit; }

        static float Clamp(float v) { return v < -1f ? -1f : v > 1f ? 1f : v; }
    }

    public static class Program
    {
        // thruster.exe [--port=N] [--instance=I] [--instances=N] [--agents=K] [--connect-timeout=SECONDS]
        //     (or the AGENTKIT_BRIDGE_* variables)
        // --instances=N: N Thruster games in this process, instances I .. I+N-1 on one connection
        // (env.instances_per_process: N launches it so).
        public static int Main(string[] args)
        {
            var settings = new BridgeSettings();
            try
            {
                settings = BridgeSettings.FromEnvironment(args);
                int ships = settings.ExtraWholeNumber("agents", 1, 1, 1024);
                var games = new Thruster[settings.Instances];
                for (int k = 0; k < games.Length; k++) games[k] = new Thruster(ships);
                using (var client = new BridgeClient("csharp-thruster", games[0].Agents(), games))
                {
                    client.Connect(settings);
                    client.Run();
                    Console.WriteLine("thruster: " + client.Instances + " instance(s) from " + client.Instance + ", " +
                                      client.Steps + " steps, " + client.Episodes + " episodes; " + client.CloseReason);
                }
                return 0;
            }
            catch (BridgeException e)
            {
                Console.Error.WriteLine("thruster: " + e.Code + ": " + e.Message);
                return 2;
            }
            catch (System.Net.Sockets.SocketException e)
            {
                Console.Error.WriteLine("thruster: cannot reach the trainer at " + settings.Host + ":" + settings.Port + ": " + e.Message);
                return 2;
            }
        }
    }
}
