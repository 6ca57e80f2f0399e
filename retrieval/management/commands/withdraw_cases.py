from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Withdraw library cases (a diagnosis found wrong, consent withdrawn): from the next search on no "
        "backend and no method returns them, and later index builds leave them out. --restore puts them back."
    )

    def add_arguments(self, parser):
        parser.add_argument("image_ids", nargs="+", metavar="IMAGE_ID", help="the cases' image ids (ISIC_...)")
        parser.add_argument("--collection", help="their collection (default: the only one in the library)")
        parser.add_argument("--reason", default="", help="why they are withdrawn (required unless --restore)")
        parser.add_argument("--restore", action="store_true", help="put withdrawn cases back into the library")

    def handle(self, *args, image_ids, collection, reason, restore, **options):
        from retrieval.selectors import cases_by_image_id, default_collection
        from retrieval.services import WithdrawalError, case_restore, case_withdraw

        try:
            collection = collection or default_collection()
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not restore and not reason.strip():
            raise CommandError("Say why with --reason (a withdrawal is audited with its reason).")
        cases = cases_by_image_id(collection=collection, image_ids=image_ids)
        missing = [image_id for image_id in image_ids if image_id not in cases]
        if missing:  # checked before any change: a typo withdraws nothing
            raise CommandError(f"No case {', '.join(missing)} in collection {collection!r}; nothing was changed.")
        failed = []
        for image_id in dict.fromkeys(image_ids):
            try:
                if restore:
                    case_restore(case=cases[image_id])
                else:
                    case_withdraw(case=cases[image_id], reason=reason)
            except WithdrawalError as exc:
                failed.append(str(exc))
                continue
            self.stdout.write(f"{'Restored' if restore else 'Withdrew'} {image_id} ({collection}).")
        if failed:
            raise CommandError(" ".join(failed))
