import { providerConfigSchema } from "../../provider/plugin/providerConfig";
import { PLACEMENT_INPUTS, RESOURCE_DECLARATIONS } from "../../provider/resources/declarations";
import { referenceText } from "./referenceDoc";
import { sdkTypesText } from "./sdkTypes";

/** Every file derived from the zod specs, by path from the checkout's root, as it should read. */
export function generatedFiles(): Record<string, string> {
    return {
        "sdk/generatedTypes.ts": sdkTypesText({ resources: RESOURCE_DECLARATIONS, placement: PLACEMENT_INPUTS }),
        "docs/reference.md": referenceText({
            resources: RESOURCE_DECLARATIONS,
            placement: PLACEMENT_INPUTS,
            config: providerConfigSchema,
        }),
    };
}
