import { readFileSync } from "node:fs";
import * as path from "node:path";
import * as ts from "typescript";

/**
 * Editors show a field's doc comment on hover: every field of the SDK's Args interfaces and
 * every output of its resource classes has one. Read from the source with the TypeScript parser.
 */

const ROOT = path.join(__dirname, "..", "..");

/** `Interface.field` or `Class.output` for each member without a /** doc comment. */
function undocumentedMembers(file: string): { checked: number; missing: string[] } {
    // Parent pointers set: the doc-comment lookup walks up from each member.
    const source = ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.Latest, true);
    const missing: string[] = [];
    let checked = 0;
    const hasDoc = (node: ts.Node) =>
        ts
            .getJSDocCommentsAndTags(node)
            .some((d) => ts.isJSDoc(d) && (typeof d.comment === "string" ? d.comment.trim() : d.comment?.length));
    const visitMembers = (owner: string, members: ts.NodeArray<ts.TypeElement | ts.ClassElement>) => {
        for (const m of members) {
            if (!(ts.isPropertySignature(m) || ts.isPropertyDeclaration(m))) continue;
            checked++;
            const name = m.name.getText(source);
            if (!hasDoc(m)) missing.push(`${owner}.${name}`);
            // Inline object types (a disk, a share…) are fields too.
            const type = m.type && (ts.isArrayTypeNode(m.type) ? m.type.elementType : m.type);
            if (type && ts.isTypeLiteralNode(type)) visitMembers(`${owner}.${name}`, type.members);
        }
    };
    const visit = (node: ts.Node) => {
        if (ts.isInterfaceDeclaration(node) && node.name.text !== "DeepInput")
            visitMembers(node.name.text, node.members);
        if (ts.isClassDeclaration(node) && node.name) visitMembers(node.name.text, node.members);
        if (ts.isTypeAliasDeclaration(node) && node.name.text === "DiskImageSource" && ts.isUnionTypeNode(node.type)) {
            for (const t of node.type.types)
                if (ts.isTypeLiteralNode(t))
                    visitMembers(`DiskImageSource(${t.members[0]?.getText(source)})`, t.members);
        }
        ts.forEachChild(node, visit);
    };
    visit(source);
    return { checked, missing };
}

// generatedTypes.ts holds every Args type and every resource's outputs (written from the specs' descriptions).
test.each(["sdk/generatedTypes.ts"])("every field in %s has a doc comment", (rel) => {
    const { checked, missing } = undocumentedMembers(path.join(ROOT, rel));
    expect(checked).toBeGreaterThan(20);
    expect(missing).toEqual([]);
});
