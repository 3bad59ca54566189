import type { Scenario } from "../harness/scenario.ts";
import { footprintScenario } from "./footprint.ts";
import { gatewayScenario } from "./gateway.ts";
import { getRateScenario } from "./get-rate.ts";
import { overloadScenario } from "./overload.ts";
import { placeOrderScenario } from "./place-order.ts";
import { redisGetScenario } from "./redis-get.ts";
import { watchRatesScenario } from "./watch-rates.ts";

/** Every scenario, in running order; footprint last, as it gathers the peaks of all runs. */
export const SCENARIOS: Scenario[] = [
  getRateScenario,
  gatewayScenario,
  placeOrderScenario,
  watchRatesScenario,
  overloadScenario,
  redisGetScenario,
  footprintScenario,
];
