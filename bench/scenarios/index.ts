import type { Scenario } from "../harness/scenario.ts";
import { getRateScenario } from "./get-rate.ts";
import { placeOrderScenario } from "./place-order.ts";
import { watchRatesScenario } from "./watch-rates.ts";

/** Every scenario, in running order. */
export const SCENARIOS: Scenario[] = [getRateScenario, placeOrderScenario, watchRatesScenario];
